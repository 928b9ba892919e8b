package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// rowMeshSecure is mesh-http-nats with security on: both sidecars have
// identities of one mesh CA, every envelope is sealed and verified.
const rowMeshSecure = "mesh-http-nats-secure"

// meshHTTPSecureRow is meshHTTPRow over NATS with identities: the cost of
// authenticating every envelope, next to the same row without.
func (e *env) meshHTTPSecureRow(ctx context.Context, url string) (*row, error) {
	service := e.runID + "-echo-secure"
	dir := filepath.Join(e.sup.dir, "ca")
	now := time.Now()
	ca, err := identity.NewCA("default", 24*time.Hour, now.Add(-time.Minute))
	if err != nil {
		return nil, err
	}
	if err := ca.WriteFiles(dir); err != nil {
		return nil, err
	}
	issue := func(svc string) (cert, key string, err error) {
		certPEM, keyPEM, err := ca.Issue(svc, 12*time.Hour, now)
		if err != nil {
			return "", "", err
		}
		return identity.WriteServiceFiles(filepath.Join(dir, svc), svc, certPEM, keyPEM)
	}
	caFile := filepath.Join(dir, identity.CACertFile)
	var admins [2]string
	for i := range admins {
		if admins[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adCert, adKey, err := issue(service)
	if err != nil {
		return nil, err
	}
	ad, err := startSidecar(ctx, e.sup, e.binary, sidecarSpec{Name: rowMeshSecure + " adapter", ID: e.runID + "-" + rowMeshSecure + "-adapter",
		Broker: url, Admin: admins[0], Service: service, Target: "http://" + e.appHTTP, Cert: adCert, Key: adKey, CA: caFile})
	if err != nil {
		return nil, err
	}
	ambCert, ambKey, err := issue("bench-client")
	if err != nil {
		return nil, err
	}
	amb, err := startSidecar(ctx, e.sup, e.binary, sidecarSpec{Name: rowMeshSecure + " ambassador", ID: e.runID + "-" + rowMeshSecure + "-ambassador",
		Broker: url, Admin: admins[1], Service: service, Listen: listen, Cert: ambCert, Key: ambKey, CA: caFile})
	if err != nil {
		return nil, err
	}
	client := newHTTPClient(e.maxConc)
	e.closers = append(e.closers, func() error { client.CloseIdleConnections(); return nil })
	return &row{name: rowMeshSecure, broker: "nats", procs: sidecarProcs(amb, ad),
		about: fmt.Sprintf("%s with identities: every envelope carries credentials and a MAC, verified by its receiver", meshRowName("nats")),
		calls: httpCallers(client, "http://"+listen+"/echo")}, nil
}
