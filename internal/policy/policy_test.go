package policy_test

import (
	"testing"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/policy"
)

func TestAllow(t *testing.T) {
	p := policy.Compile([]config.AllowRule{
		{From: "web", Methods: []string{"GET"}, Paths: []string{"/orders/*", "/static/**"}},
		{From: "web", Methods: []string{"POST"}, Paths: []string{"/orders"}},
		{From: "admin"},
		{From: "*", Paths: []string{"/health"}},
		{From: "web", GRPC: []string{"/shop.v1.Orders/Get", "/shop.v1.Catalog/*"}},
	})
	cases := []struct {
		c    policy.Call
		want bool
	}{
		{policy.Call{Caller: "web", Method: "GET", Path: "/orders/7"}, true},
		{policy.Call{Caller: "web", Method: "GET", Path: "/orders/7?x=1"}, true},
		{policy.Call{Caller: "web", Method: "GET", Path: "/orders/7/items"}, false},
		{policy.Call{Caller: "web", Method: "GET", Path: "/static/a/b.css"}, true},
		{policy.Call{Caller: "web", Method: "DELETE", Path: "/orders/7"}, false},
		{policy.Call{Caller: "web", Method: "POST", Path: "/orders"}, true},
		{policy.Call{Caller: "other", Method: "GET", Path: "/orders/7"}, false},
		{policy.Call{Caller: "other", Method: "GET", Path: "/health"}, true},
		{policy.Call{Caller: "admin", Method: "DELETE", Path: "/anything"}, true},
		{policy.Call{Caller: "admin", GRPC: true, Path: "/shop.v1.Orders/Delete"}, true},
		{policy.Call{Caller: "web", GRPC: true, Path: "/shop.v1.Orders/Get"}, true},
		{policy.Call{Caller: "web", GRPC: true, Path: "/shop.v1.Orders/Delete"}, false},
		{policy.Call{Caller: "web", GRPC: true, Path: "/shop.v1.Catalog/List"}, true},
		{policy.Call{Caller: "other", GRPC: true, Path: "/shop.v1.Catalog/List"}, false},
		{policy.Call{Caller: "", Method: "GET", Path: "/orders/7"}, false},
	}
	for _, c := range cases {
		if got := p.Allow(c.c); got != c.want {
			t.Errorf("Allow(%+v) = %v, want %v", c.c, got, c.want)
		}
	}
	if !(*policy.Policy)(nil).Allow(policy.Call{Caller: "x", Method: "DELETE", Path: "/"}) {
		t.Error("no rules must allow every call")
	}
}
