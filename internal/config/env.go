package config

import (
	"encoding"
	"reflect"
	"strconv"
	"strings"
)

// EnvPrefix starts every override variable. A key's variable is the prefix
// and its path in capitals with '_' for '.': ambassador.timeout is
// BUSMESH_AMBASSADOR_TIMEOUT. Overrides apply to sections the file has; they
// do not create an ambassador or adapter.
const EnvPrefix = "BUSMESH_"

// EnvName returns the override variable of a dotted key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func applyEnv(c *Config, lookup func(string) (string, bool), errs *Error) {
	applyEnvStruct(reflect.ValueOf(c).Elem(), "", lookup, errs)
}

func applyEnvStruct(v reflect.Value, key string, lookup func(string) (string, bool), errs *Error) {
	t := v.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		applyEnvValue(v.Field(i), join(key, name), lookup, errs)
	}
}

func applyEnvValue(f reflect.Value, key string, lookup func(string) (string, bool), errs *Error) {
	if f.CanAddr() && f.Addr().Type().Implements(textUnmarshaler) {
		if s, ok := lookup(EnvName(key)); ok {
			if err := f.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
				errs.addEnv(key, "%q (from %s) %v", s, EnvName(key), err)
			}
		}
		return
	}
	switch f.Kind() {
	case reflect.Pointer:
		if !f.IsNil() {
			applyEnvValue(f.Elem(), key, lookup, errs)
		}
	case reflect.Struct:
		applyEnvStruct(f, key, lookup, errs)
	case reflect.String:
		if s, ok := lookup(EnvName(key)); ok {
			f.SetString(s)
		}
	case reflect.Int, reflect.Int64:
		if s, ok := lookup(EnvName(key)); ok {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				errs.addEnv(key, "%q (from %s) is not an integer", s, EnvName(key))
				return
			}
			f.SetInt(n)
		}
	case reflect.Bool:
		if s, ok := lookup(EnvName(key)); ok {
			b, err := strconv.ParseBool(s)
			if err != nil {
				errs.addEnv(key, "%q (from %s) is not true or false", s, EnvName(key))
				return
			}
			f.SetBool(b)
		}
	case reflect.Float64:
		if s, ok := lookup(EnvName(key)); ok {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				errs.addEnv(key, "%q (from %s) is not a number", s, EnvName(key))
				return
			}
			f.SetFloat(v)
		}
	}
	// Maps are not overridable one key at a time; set them in the file.
}
