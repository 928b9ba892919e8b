package config_test

import (
	"fmt"
	"os"

	"github.com/busmesh/busmesh/internal/config"
)

func Example() {
	file := []byte(`
broker: nats://127.0.0.1:4222
ambassador:
  upstreams:
    orders: 127.0.0.1:9001
  timeout: 3 seconds
`)
	_, err := config.Parse("caller.yaml", file, os.LookupEnv)
	fmt.Println(err)
	// Output:
	// config caller.yaml: 1 problem
	//   line 6: ambassador.timeout: "3 seconds" is not a duration (example: "30s")
}
