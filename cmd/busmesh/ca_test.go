package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/busmesh/busmesh/internal/identity"
)

// TestMain lets a test run the real main, exit status included: with
// BUSMESH_TEST_RUN_MAIN=1 the test binary is busmesh.
func TestMain(m *testing.M) {
	if os.Getenv("BUSMESH_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// busmesh runs the binary with args and returns its output and exit status.
func busmesh(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "BUSMESH_TEST_RUN_MAIN=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run busmesh %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := busmesh(t, args...)
	if code != 0 {
		t.Fatalf("busmesh %s: exit %d, stderr %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func TestCAExitCodes(t *testing.T) {
	dir := t.TempDir()
	ca, certs, other := filepath.Join(dir, "ca"), filepath.Join(dir, "certs"), filepath.Join(dir, "other")
	mustRun(t, "ca", "init", "--dir", ca, "--mesh", "prod")
	mustRun(t, "ca", "init", "--dir", other, "--mesh", "staging")
	mustRun(t, "ca", "issue", "orders", "--dir", ca, "--out", certs)
	garbage := filepath.Join(dir, "garbage.crt")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)
	expired := filepath.Join(dir, "expired")
	issueExpired(t, ca, expired)

	orders := filepath.Join(certs, "orders.crt")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string // in stderr
	}{
		{"no subcommand", []string{"ca"}, 2, "want a subcommand"},
		{"unknown subcommand", []string{"ca", "sign"}, 2, `unknown subcommand "sign"`},
		{"unknown flag", []string{"ca", "init", "--bogus"}, 2, "unknown flag"},
		{"bad output", []string{"ca", "inspect", orders, "-o", "yaml"}, 2, `--output "yaml"`},
		{"init without mesh", []string{"ca", "init", "--dir", filepath.Join(dir, "x")}, 2, "--mesh"},
		{"init bad mesh", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--mesh", "a.b"}, 2, "--mesh"},
		{"init bad ttl", []string{"ca", "init", "--dir", filepath.Join(dir, "x"), "--mesh", "m", "--ttl", "0s"}, 2, "--ttl"},
		{"init over a CA", []string{"ca", "init", "--dir", ca, "--mesh", "prod"}, 1, "exists"},
		{"issue without service", []string{"ca", "issue", "--dir", ca}, 2, "accepts 1 arg"},
		{"issue bad service", []string{"ca", "issue", "a b", "--dir", ca, "--out", certs}, 2, "SERVICE"},
		{"issue beyond the CA", []string{"ca", "issue", "orders", "--dir", ca, "--out", certs, "--ttl", "100000h"}, 1, "outlive the CA"},
		{"issue without a CA", []string{"ca", "issue", "orders", "--dir", filepath.Join(dir, "none"), "--out", certs}, 1, "no such file"},
		{"inspect", []string{"ca", "inspect", orders}, 0, ""},
		{"inspect verified", []string{"ca", "inspect", orders, "--ca", filepath.Join(ca, "ca.crt")}, 0, ""},
		{"inspect the CA", []string{"ca", "inspect", filepath.Join(ca, "ca.crt"), "--ca", filepath.Join(ca, "ca.crt")}, 0, ""},
		{"inspect against another mesh", []string{"ca", "inspect", orders, "--ca", filepath.Join(other, "ca.crt")}, 1, "another mesh"},
		{"inspect expired", []string{"ca", "inspect", filepath.Join(expired, "orders.crt"), "--ca", filepath.Join(ca, "ca.crt")}, 1, "expired"},
		{"inspect missing file", []string{"ca", "inspect", filepath.Join(dir, "missing.crt")}, 2, "no such file"},
		{"inspect garbage", []string{"ca", "inspect", garbage}, 1, "malformed"},
		{"inspect two files", []string{"ca", "inspect", orders, orders}, 2, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := busmesh(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, errOut)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q, want it to contain %q", errOut, tt.wantErr)
			}
		})
	}
}

// issueExpired writes into dir a certificate of the CA in caDir that
// expired an hour ago, which the CLI cannot make.
func issueExpired(t *testing.T, caDir, dir string) {
	t.Helper()
	ca, err := identity.LoadCA(filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("orders", time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := identity.WriteServiceFiles(dir, "orders", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
}

func TestCAFiles(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "ca", "init", "--dir", dir, "--mesh", "prod")
	mustRun(t, "ca", "issue", "orders", "--dir", dir, "--out", filepath.Join(dir, "out"), "--ttl", "2h")
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"ca.crt", 0o644}, {"ca.key", 0o600}, {"out/orders.crt", 0o644}, {"out/orders.key", 0o600}} {
		fi, err := os.Stat(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("%s mode %v, want %v", f.name, fi.Mode().Perm(), f.mode)
		}
	}
	key, _ := os.ReadFile(filepath.Join(dir, "out/orders.key"))
	if n := strings.Count(string(key), "-----BEGIN PRIVATE KEY-----"); n != 2 {
		t.Errorf("orders.key has %d private keys, want 2 (Ed25519 and X25519)", n)
	}
	// What the CLI wrote is an identity a sidecar loads.
	id, err := identity.Load(filepath.Join(dir, "out/orders.crt"), filepath.Join(dir, "out/orders.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if id.Service() != "orders" || id.Mesh() != "prod" {
		t.Errorf("Load() = %s in %s, want orders in prod", id.Service(), id.Mesh())
	}
	if got := id.Cert().NotAfter.Sub(id.Cert().NotBefore); got != 2*time.Hour+time.Minute {
		t.Errorf("validity %v, want 2h and the minute of backdating", got)
	}
}

func TestCAInspectJSON(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "ca", "init", "--dir", dir, "--mesh", "prod")
	mustRun(t, "ca", "issue", "orders", "--dir", dir, "--out", dir)
	orders := filepath.Join(dir, "orders.crt")

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     map[string]any // fields with known values
	}{
		{"service verified", []string{"ca", "inspect", orders, "--ca", filepath.Join(dir, "ca.crt"), "-o", "json"}, 0,
			map[string]any{"file": orders, "service": "orders", "mesh": "prod", "ca": false, "keyAgreement": true, "verified": true}},
		{"service unchecked", []string{"ca", "inspect", orders, "-o", "json"}, 0,
			map[string]any{"file": orders, "service": "orders", "mesh": "prod", "ca": false, "keyAgreement": true}},
		{"CA", []string{"ca", "inspect", filepath.Join(dir, "ca.crt"), "-o", "json"}, 0,
			map[string]any{"file": filepath.Join(dir, "ca.crt"), "mesh": "prod", "ca": true, "keyAgreement": false}},
		{"issue", []string{"ca", "issue", "web", "--dir", dir, "--out", dir, "-o", "json"}, 0,
			map[string]any{"file": filepath.Join(dir, "web.crt"), "keyFile": filepath.Join(dir, "web.key"), "service": "web",
				"mesh": "prod", "ca": false, "keyAgreement": true, "verified": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := busmesh(t, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.wantCode, errOut)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			fp, _ := got["fingerprint"].(string)
			serial, _ := got["serial"].(string)
			if !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+64 || serial == "" {
				t.Errorf("fingerprint %q, serial %q; want sha256:<64 hex> and a serial", fp, serial)
			}
			for _, k := range []string{"notBefore", "notAfter"} {
				s, _ := got[k].(string)
				if _, err := time.Parse(time.RFC3339, s); err != nil {
					t.Errorf("%s = %q, want an RFC 3339 time", k, got[k])
				}
				delete(got, k)
			}
			delete(got, "fingerprint")
			delete(got, "serial")
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("JSON (-got +want):\n%s", diff)
			}
		})
	}
}

func TestCAInspectTable(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, "ca", "init", "--dir", dir, "--mesh", "prod")
	mustRun(t, "ca", "issue", "orders", "--dir", dir, "--out", dir)
	out := mustRun(t, "ca", "inspect", filepath.Join(dir, "orders.crt"), "--ca", filepath.Join(dir, "ca.crt"))
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, _, _ := strings.Cut(line, "  ")
		keys = append(keys, k)
	}
	want := []string{"file", "service", "mesh", "serial", "fingerprint", "not before", "not after", "key agreement", "verified"}
	if diff := cmp.Diff(keys, want); diff != "" {
		t.Errorf("rows (-got +want):\n%s\n%s", diff, out)
	}
	if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		return strings.HasPrefix(l, "verified") && strings.HasSuffix(l, " yes")
	}) {
		t.Errorf("no 'verified yes' row:\n%s", out)
	}
}
