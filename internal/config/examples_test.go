package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/busmesh/busmesh/internal/config"
)

// TestDeployExamples keeps the shipped example configs valid.
func TestDeployExamples(t *testing.T) {
	files, err := filepath.Glob("../../deploy/examples/*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example configs found under deploy/examples")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(f, data, noEnv); err != nil {
			t.Errorf("%v", err)
		}
	}
}
