package adapter

import "context"

// app is the local application as the adapter calls it: over HTTP
// (httpApp) or gRPC (grpcApp). A new protocol is a new app.
type app interface {
	// grpc reports whether the application is a gRPC server.
	grpc() bool
	// serve makes one call to the application and answers it through sc,
	// until ctx ends (the caller's deadline or cancel). When the answer
	// goes on streaming after its head, serve returns the rest as tail,
	// which the adapter may run apart from the worker; else nil.
	serve(ctx context.Context, sc *serverCall) (tail func())
	// check checks the application's health once.
	check(ctx context.Context) error
	// close releases the connections to the application.
	close() error
}
