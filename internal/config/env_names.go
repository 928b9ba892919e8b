package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// envTestPrefix starts the variables the test suites read (for example
// BUSMESH_TEST_NATS): they are not config keys, and a sidecar ignores them.
const envTestPrefix = EnvPrefix + "TEST_"

// EnvNames returns every override variable a config has, sorted: one per
// key that holds a single value (maps are set in the file only).
func EnvNames() []string {
	var names []string
	collectEnvNames(reflect.TypeFor[Config](), "", &names)
	slices.Sort(names)
	return names
}

func collectEnvNames(t reflect.Type, key string, names *[]string) {
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case reflect.PointerTo(ft).Implements(textUnmarshaler):
			*names = append(*names, EnvName(join(key, name)))
		case ft.Kind() == reflect.Struct:
			collectEnvNames(ft, join(key, name), names)
		case ft.Kind() != reflect.Map:
			*names = append(*names, EnvName(join(key, name)))
		}
	}
}

// checkEnvNames reports each BUSMESH_ variable in environ ("KEY=value"
// entries, as os.Environ returns) that is a near miss of a key's variable:
// a misspelled override would otherwise be ignored without a word.
// Variables far from every key are left alone: deployments define their
// own (the Helm chart's BUSMESH_RABBITMQ_PASSWORD builds the broker URL).
func checkEnvNames(environ []string, errs *Error) {
	known := EnvNames()
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || strings.HasPrefix(name, envTestPrefix) || serviceLink(name) || slices.Contains(known, name) {
			continue
		}
		if hint := suggestEnv(name, known); hint != "" {
			errs.addEnv(name, "unknown variable%s (each key has one: %s<KEY> in capitals, '_' for '.')", hint, EnvPrefix)
		}
	}
}

// serviceLink reports whether name is one of the variables Kubernetes
// gives every container for a Service named busmesh in its namespace
// (enableServiceLinks, on by default): BUSMESH_PORT, BUSMESH_PORT_4222_TCP…,
// BUSMESH_SERVICE_HOST, BUSMESH_SERVICE_PORT…. Refusing them (BUSMESH_PORT
// is a near miss of BUSMESH_PROCS) would keep the sidecar from starting.
func serviceLink(name string) bool {
	rest := strings.TrimPrefix(name, EnvPrefix)
	return rest == "PORT" || strings.HasPrefix(rest, "PORT_") || strings.HasPrefix(rest, "SERVICE_HOST") || strings.HasPrefix(rest, "SERVICE_PORT")
}

// suggestEnv returns `; did you mean X?` for the closest known variable,
// if one is within three edits.
func suggestEnv(got string, known []string) string {
	best, bestDist := "", 4
	for _, k := range known {
		if d := editDistance(got, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %s?", best)
}
