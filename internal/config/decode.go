package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Key is the dotted path of the key: "ambassador.timeout".
	Key string
	// Line is the line in the file, or 0 when the problem is not in the
	// file (an environment override, a missing key).
	Line int
	// Msg says what is wrong and what is allowed, starting with the value.
	Msg string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Key, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Key, p.Msg)
}

// Error lists every problem found in a configuration.
type Error struct {
	File     string
	Problems []Problem

	lines map[string]int // key path -> line in the file, for later stages
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problem", e.File, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *Error) add(key string, line int, format string, args ...any) {
	if line == 0 {
		line = e.lines[key]
	}
	e.Problems = append(e.Problems, Problem{Key: key, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// decodeYAML decodes data into c key by key, so that it can report every
// unknown key and bad value with its path, not just the first.
func decodeYAML(data []byte, c *Config, errs *Error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		errs.add("(file)", 0, "not valid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	if len(doc.Content) == 0 {
		return // an empty file is all defaults
	}
	decodeValue(doc.Content[0], reflect.ValueOf(c).Elem(), "", errs)
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func decodeValue(n *yaml.Node, v reflect.Value, key string, errs *Error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the default
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler) {
		if n.Kind != yaml.ScalarNode {
			errs.add(key, n.Line, "want a single value, not a %s", kindName(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			errs.add(key, n.Line, "%q %v", n.Value, err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
			if d, ok := v.Interface().(defaulter); ok {
				d.setDefaults()
			}
		}
		decodeValue(n, v.Elem(), key, errs)
	case reflect.Struct:
		decodeStruct(n, v, key, errs)
	case reflect.Map:
		decodeMap(n, v, key, errs)
	case reflect.Slice:
		decodeSlice(n, v, key, errs)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			errs.add(key, n.Line, "want a string, not a %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64:
		var i int64
		// yaml.v3 would truncate a float into an integer (2.9 → 2).
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			errs.add(key, n.Line, "%s is not an integer", quoted(n))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			errs.add(key, n.Line, "%s is not true or false", quoted(n))
			return
		}
		v.SetBool(b)
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || n.Decode(&f) != nil {
			errs.add(key, n.Line, "%s is not a number", quoted(n))
			return
		}
		v.SetFloat(f)
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), key))
	}
}

func decodeStruct(n *yaml.Node, v reflect.Value, key string, errs *Error) {
	if n.Kind != yaml.MappingNode {
		errs.add(orTop(key), n.Line, "want a mapping of keys, not a %s", kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		idx, ok := fields[k.Value]
		if !ok {
			errs.add(join(key, k.Value), k.Line, "unknown key%s (allowed: %s)", suggest(k.Value, fields), strings.Join(sortedKeys(fields), ", "))
			continue
		}
		if repeated(seen, k, join(key, k.Value), errs) {
			continue
		}
		errs.lines[join(key, k.Value)] = k.Line
		decodeValue(val, v.Field(idx), join(key, k.Value), errs)
	}
}

// repeated reports, and records in errs, a key given twice in one
// mapping: YAML forbids it, and a decoder that kept the last would
// silently drop the first (or merge two sections of the same name).
func repeated(seen map[string]int, k *yaml.Node, key string, errs *Error) bool {
	if first, ok := seen[k.Value]; ok {
		errs.add(key, k.Line, "set twice (first at line %d)", first)
		return true
	}
	seen[k.Value] = k.Line
	return false
}

func decodeMap(n *yaml.Node, v reflect.Value, key string, errs *Error) {
	if n.Kind != yaml.MappingNode {
		errs.add(key, n.Line, "want a mapping, not a %s", kindName(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if repeated(seen, k, join(key, k.Value), errs) {
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		errs.lines[join(key, k.Value)] = k.Line
		decodeValue(val, elem, join(key, k.Value), errs)
		v.SetMapIndex(reflect.ValueOf(k.Value), elem)
	}
}

// decodeSlice decodes a sequence; its items' keys are key[i].
func decodeSlice(n *yaml.Node, v reflect.Value, key string, errs *Error) {
	if n.Kind != yaml.SequenceNode {
		errs.add(key, n.Line, "want a list, not a %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		k := fmt.Sprintf("%s[%d]", key, i)
		errs.lines[k] = item.Line
		decodeValue(item, s.Index(i), k, errs)
	}
	v.Set(s)
}

// yamlFields maps a struct's yaml key names to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// suggest returns `; did you mean "x"?` for the closest known key, if any
// is close.
func suggest(got string, fields map[string]int) string {
	best, bestDist := "", 3
	for k := range fields {
		if d := editDistance(got, k); d < bestDist || d == bestDist && k < best {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func orTop(key string) string {
	if key == "" {
		return "(top level)"
	}
	return key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "single value"
}

func quoted(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return "a " + kindName(n)
	}
	return fmt.Sprintf("%q", n.Value)
}

// addEnv records a problem with an environment override: it has no line.
func (e *Error) addEnv(key string, format string, args ...any) {
	e.Problems = append(e.Problems, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}
