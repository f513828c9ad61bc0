// A real go-plugin host (HashiCorp go-plugin, as packaged by Debian) for the Python plugin.
//
// Usage: gohost PLUGIN [METHOD:HEXREQUEST ...]
//
// It launches PLUGIN as Nomad does (same handshake config: protocol 2, Nomad's magic cookie, gRPC only),
// pings the health service, invokes each given gRPC method with the given serialized request (so the test
// builds requests with the Python stubs), and finally calls Kill (GRPCController.Shutdown, then SIGKILL
// after 2 s). Results go to stdout as JSON lines; go-plugin's own log (which re-logs the plugin's stderr
// lines at their hclog level) goes to stderr as JSON.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// rawCodec passes serialized messages through untouched.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b := v.(*[]byte)
	*b = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// connPlugin hands out the raw gRPC connection to the plugin process.
type connPlugin struct{ plugin.Plugin }

func (connPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (connPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return c, nil
}

func main() {
	out := json.NewEncoder(os.Stdout)
	logger := hclog.New(&hclog.LoggerOptions{Name: "gohost", Output: os.Stderr, Level: hclog.Trace, JSONFormat: true})
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  2,
			MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
			MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
		},
		Plugins:          map[string]plugin.Plugin{"driver": connPlugin{}},
		Cmd:              exec.Command(os.Args[1]),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	})
	rpc, err := client.Client()
	if err != nil {
		out.Encode(map[string]string{"step": "client", "error": err.Error()})
		client.Kill()
		os.Exit(1)
	}
	ping := ""
	if err := rpc.Ping(); err != nil {
		ping = err.Error()
	}
	out.Encode(map[string]string{"step": "ping", "error": ping})
	raw, err := rpc.Dispense("driver")
	if err != nil {
		out.Encode(map[string]string{"step": "dispense", "error": err.Error()})
		client.Kill()
		os.Exit(1)
	}
	conn := raw.(*grpc.ClientConn)
	for _, call := range os.Args[2:] {
		parts := strings.SplitN(call, ":", 2)
		req, _ := hex.DecodeString(parts[1])
		var resp []byte
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := conn.Invoke(ctx, parts[0], &req, &resp, grpc.ForceCodec(rawCodec{}))
		cancel()
		result := map[string]string{"step": "call", "method": parts[0], "response": hex.EncodeToString(resp)}
		if err != nil {
			result["error"] = err.Error()
		}
		out.Encode(result)
	}
	started := time.Now()
	client.Kill()
	out.Encode(map[string]interface{}{"step": "kill", "seconds": time.Since(started).Seconds(), "exited": client.Exited()})
}
