package adapter

import "context"

// app is the local application as the adapter calls it: over HTTP
// (httpApp) or gRPC (grpcApp). A new protocol is a new app.
type app interface {
	// grpc reports whether the application is a gRPC server.
	grpc() bool
	// serve makes one call to the application and answers it through sc,
	// until ctx ends (the caller's deadline or cancel).
	serve(ctx context.Context, sc *serverCall)
	// check checks the application's health once.
	check(ctx context.Context) error
	// close releases the connections to the application.
	close() error
}
