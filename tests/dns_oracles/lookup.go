// net.Resolver{PreferGo: true}.LookupIPAddr(NAME) timed, as one JSON line:
// the addresses, or the DNSError's text. Built by the DNS differential test
// with CGO_ENABLED=0, as most Kubernetes controllers are.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: lookup NAME\n")
		os.Exit(2)
	}
	resolver := &net.Resolver{PreferGo: true}
	start := time.Now()
	addrs, err := resolver.LookupIPAddr(context.Background(), os.Args[1])
	out := map[string]any{
		"ms":        float64(time.Since(start).Microseconds()) / 1000,
		"error":     nil,
		"addresses": []string{},
	}
	if err != nil {
		text := err.Error()
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			text = dnsErr.Err
		}
		// "read udp a->b: read: connection refused": the last part.
		if i := strings.LastIndex(text, ": "); i >= 0 {
			text = text[i+2:]
		}
		out["error"] = text
	} else {
		list := []string{}
		for _, a := range addrs {
			list = append(list, a.IP.String())
		}
		out["addresses"] = list
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
