package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/identity"
)

// caFlags are the flags every ca subcommand shares.
type caFlags struct {
	output string
}

func (f *caFlags) check() error {
	if f.output != "table" && f.output != "json" {
		return usageError{fmt.Errorf("--output %q: want table or json", f.output)}
	}
	return nil
}

func newCACmd() *cobra.Command {
	var f caFlags
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create the mesh CA, issue service certificates, inspect certificates",
		Long: `Manage the identities of a mesh. "ca init" creates the mesh CA (an Ed25519
key and a self-signed certificate naming the mesh); "ca issue" gives a service a
short-lived certificate with an Ed25519 signing key and an X25519
key-agreement key; "ca inspect" shows what a certificate says and whether it
verifies. Sidecars reload their certificate when its files change, so
rotating is running "ca issue" again.

Exit status: 0 ok, 1 error, 2 usage (bad arguments or flags, unreadable input).`,
		Example: `  busmesh ca init --dir ca --mesh prod
  busmesh ca issue orders --dir ca --out certs --ttl 24h
  busmesh ca inspect certs/orders.crt --ca ca/ca.crt -o json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("busmesh ca: unknown subcommand %q: want init, issue or inspect", args[0])}
			}
			return usageError{fmt.Errorf("busmesh ca: want a subcommand: init, issue or inspect")}
		},
	}
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.AddCommand(newCAInitCmd(&f), newCAIssueCmd(&f), newCAInspectCmd(&f))
	return cmd
}

// usageArgs makes an argument check's failure a usage error (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func newCAInitCmd(f *caFlags) *cobra.Command {
	var (
		dir, mesh string
		ttl       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a mesh CA: ca.crt and ca.key (mode 0600) in --dir",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if err := broker.ValidToken(mesh); err != nil {
				return usageError{fmt.Errorf("--mesh: %w", err)}
			}
			if ttl <= 0 {
				return usageError{fmt.Errorf("--ttl %v: want a positive duration", ttl)}
			}
			ca, err := identity.NewCA(mesh, ttl, time.Now())
			if err != nil {
				return err
			}
			if err := ca.WriteFiles(dir); err != nil {
				return err
			}
			return printCert(cmd.OutOrStdout(), f.output, certReport(filepath.Join(dir, identity.CACertFile), ca.Cert(),
				filepath.Join(dir, identity.CAKeyFile), nil, nil))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the CA into")
	cmd.Flags().StringVar(&mesh, "mesh", "", "the mesh's name (letters, digits, '-', '_'); required")
	cmd.Flags().DurationVar(&ttl, "ttl", 10*365*24*time.Hour, "how long the CA is valid")
	return cmd
}

func newCAIssueCmd(f *caFlags) *cobra.Command {
	var (
		dir, out string
		ttl      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue SERVICE",
		Short: "Issue a service certificate: SERVICE.crt and SERVICE.key (mode 0600) in --out",
		Long: `Issue a short-lived certificate for SERVICE from the CA in --dir. The
certificate names busmesh://<mesh>/<SERVICE> and carries an X25519
key-agreement key; SERVICE.key holds both private keys. Existing files are
replaced atomically, so a running sidecar picks the new identity up.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			service := args[0]
			if err := broker.ValidToken(service); err != nil {
				return usageError{fmt.Errorf("SERVICE: %w", err)}
			}
			if ttl <= 0 {
				return usageError{fmt.Errorf("--ttl %v: want a positive duration", ttl)}
			}
			ca, err := identity.LoadCA(filepath.Join(dir, identity.CACertFile), filepath.Join(dir, identity.CAKeyFile))
			if err != nil {
				return err
			}
			certPEM, keyPEM, err := ca.Issue(service, ttl, time.Now())
			if err != nil {
				return err
			}
			certFile, keyFile, err := identity.WriteServiceFiles(out, service, certPEM, keyPEM)
			if err != nil {
				return err
			}
			cert, err := identity.ParseCert(certPEM)
			if err != nil {
				return err
			}
			// What was just written is checked as a sidecar will check it.
			verifyErr := verifyAgainst(cert, ca.Cert())
			verified := verifyErr == nil
			if err := printCert(cmd.OutOrStdout(), f.output, certReport(certFile, cert, keyFile, &verified, verifyErr)); err != nil {
				return err
			}
			if verifyErr != nil {
				return fmt.Errorf("issued %s does not verify: %w", certFile, verifyErr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory of the CA (ca.crt, ca.key)")
	cmd.Flags().StringVar(&out, "out", ".", "directory to write SERVICE.crt and SERVICE.key into")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the certificate is valid")
	return cmd
}

func newCAInspectCmd(f *caFlags) *cobra.Command {
	var caFile string
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show a certificate's service, mesh, fingerprint and validity; with --ca, whether it verifies",
		Long: `Show what the certificate in FILE (PEM or DER) says. With --ca, also check
it against that mesh CA certificate as a sidecar would (chain, validity,
mesh, key-agreement key) and exit 1 if it does not verify.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return usageError{err}
			}
			cert, err := identity.ParseCert(b)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			var verified *bool
			var verifyErr error
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return usageError{fmt.Errorf("--ca: %w", err)}
				}
				ca, err := identity.ParseCert(b)
				if err != nil {
					return fmt.Errorf("--ca %s: %w", caFile, err)
				}
				verifyErr = verifyAgainst(cert, ca)
				ok := verifyErr == nil
				verified = &ok
			}
			if err := printCert(cmd.OutOrStdout(), f.output, certReport(args[0], cert, "", verified, verifyErr)); err != nil {
				return err
			}
			if verifyErr != nil {
				return fmt.Errorf("%s does not verify against %s: %w", args[0], caFile, verifyErr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&caFile, "ca", "", "mesh CA certificate to verify FILE against")
	return cmd
}

// verifyAgainst checks cert as a sidecar checks a peer; a CA certificate
// verifies only against itself.
func verifyAgainst(cert, ca *x509.Certificate) error {
	if cert.IsCA {
		if !cert.Equal(ca) {
			return fmt.Errorf("%w: a different CA certificate", identity.ErrUnknownCA)
		}
		return nil
	}
	v, err := identity.NewVerifier(ca, 0, 1)
	if err != nil {
		return err
	}
	_, err = v.VerifyPeer(cert.Raw)
	return err
}

// certJSON is what -o json prints for a certificate.
type certJSON struct {
	File         string `json:"file"`
	KeyFile      string `json:"keyFile,omitempty"`
	Service      string `json:"service,omitempty"`
	Mesh         string `json:"mesh"`
	CA           bool   `json:"ca"`
	Serial       string `json:"serial"`
	Fingerprint  string `json:"fingerprint"`
	NotBefore    string `json:"notBefore"`
	NotAfter     string `json:"notAfter"`
	KeyAgreement bool   `json:"keyAgreement"`
	// Verified is absent when nothing was checked.
	Verified    *bool  `json:"verified,omitempty"`
	VerifyError string `json:"verifyError,omitempty"`
}

func certReport(file string, cert *x509.Certificate, keyFile string, verified *bool, verifyErr error) certJSON {
	in := identity.Describe(cert)
	r := certJSON{
		File: file, KeyFile: keyFile, Service: in.Service, Mesh: in.Mesh, CA: in.CA, Serial: in.Serial,
		Fingerprint: in.KeyID.String(), NotBefore: in.NotBefore.UTC().Format(time.RFC3339),
		NotAfter: in.NotAfter.UTC().Format(time.RFC3339), KeyAgreement: in.KeyAgreement, Verified: verified,
	}
	if verifyErr != nil {
		r.VerifyError = verifyErr.Error()
	}
	return r
}

func printCert(w io.Writer, output string, r certJSON) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := table(w)
	row(tw, "file", r.File)
	if r.KeyFile != "" {
		row(tw, "key file", r.KeyFile)
	}
	if r.CA {
		row(tw, "ca", "yes (mesh "+dash(r.Mesh)+")")
	} else {
		row(tw, "service", dash(r.Service))
	}
	row(tw, "mesh", dash(r.Mesh))
	row(tw, "serial", r.Serial)
	row(tw, "fingerprint", r.Fingerprint)
	row(tw, "not before", r.NotBefore)
	row(tw, "not after", r.NotAfter)
	if !r.CA {
		row(tw, "key agreement", yesNo(r.KeyAgreement))
	}
	switch {
	case r.Verified == nil:
		row(tw, "verified", "not checked (no --ca)")
	case *r.Verified:
		row(tw, "verified", "yes")
	default:
		row(tw, "verified", "no: "+r.VerifyError)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
