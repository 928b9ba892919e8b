package inject

import "go.yaml.in/yaml/v3"

// The helpers below read and edit mapping and sequence nodes in place, so
// that everything not touched keeps its order, style and comments.

// lookup returns the value of key in the mapping m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// path follows keys through nested mappings; nil when one is missing.
func path(m *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		m = lookup(m, k)
	}
	return m
}

// scalar returns the value of key when it is a scalar, else "".
func scalar(m *yaml.Node, key string) string {
	if n := lookup(m, key); n != nil && n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

// set puts value under key in the mapping m, replacing an existing value
// where it stands or appending the key at the end.
func set(m *yaml.Node, key string, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = value
			return
		}
	}
	m.Content = append(m.Content, str(key), value)
}

// remove deletes key from the mapping m.
func remove(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// child returns the node under key in m, creating it with kind when it is
// missing or null.
func child(m *yaml.Node, key string, kind yaml.Kind) *yaml.Node {
	n := lookup(m, key)
	if n == nil || n.Tag == "!!null" {
		n = &yaml.Node{Kind: kind}
		if kind == yaml.MappingNode {
			n.Tag = "!!map"
		} else {
			n.Tag = "!!seq"
		}
		set(m, key, n)
	}
	return n
}

// str is a string scalar node.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// upsertNamed replaces the element of the sequence seq whose name is name
// with n, in its place, or adds n at the front (first) or the end.
func upsertNamed(seq *yaml.Node, name string, n *yaml.Node, first bool) {
	for i, el := range seq.Content {
		if scalar(el, "name") == name {
			seq.Content[i] = n
			return
		}
	}
	if first {
		seq.Content = append([]*yaml.Node{n}, seq.Content...)
		return
	}
	seq.Content = append(seq.Content, n)
}

// removeNamed drops the element of seq whose name is name.
func removeNamed(seq *yaml.Node, name string) {
	if seq == nil {
		return
	}
	for i, el := range seq.Content {
		if scalar(el, "name") == name {
			seq.Content = append(seq.Content[:i], seq.Content[i+1:]...)
			return
		}
	}
}
