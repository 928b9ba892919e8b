// Package config reads a sidecar's YAML file into typed structs, in a fixed
// order: defaults, the file, BUSMESH_* environment overrides, Normalize,
// Validate. Unknown keys are errors, and every problem is reported at once
// with its key path, the bad value and what is allowed:
//
//	ambassador.timeout: "3 seconds" is not a duration (example: "30s")
//
// It owns the shape of the file; what each section does belongs to the
// ambassador and adapter packages. See the README, "Configuration".
package config
