// A real go-plugin host (HashiCorp go-plugin, as packaged by Debian) for the Python plugin.
//
// Usage: gohost PLUGIN [METHOD:HEXREQUEST ...]
//
// It launches PLUGIN as Nomad does (same handshake config: protocol 2, Nomad's magic cookie, gRPC only),
// pings the health service, invokes each given gRPC method with the given serialized request (so the test
// builds requests with the Python stubs), and finally calls Kill (GRPCController.Shutdown, then SIGKILL
// after 2 s). Results go to stdout as JSON lines; go-plugin's own log (which re-logs the plugin's stderr
// lines at their hclog level) goes to stderr as JSON.
//
// Usage: gohost -i PLUGIN
//
// Interactive mode, for call sequences that span several plugin processes (Nomad restarting a client while
// another client serves the replacement). Each stdin line is a JSON command, each answer a JSON line
// carrying the command's "id":
//
//	{"id":1,"op":"launch","inst":"a"}                          launch and ping plugin instance "a"
//	{"id":2,"op":"call","inst":"a","method":M,"request":HEX}   a unary call; answers {"response":HEX} or {"error"}
//	{"id":3,"op":"start","inst":"a","method":M,"request":HEX}  the same call in the background: answers
//	                                                           {"step":"started"} now and {"step":"done",...} later
//	{"id":4,"op":"kill","inst":"a"}                            go-plugin's Kill (Shutdown, then SIGKILL after 2 s)
//	{"id":5,"op":"crash","inst":"a"}                           SIGKILL the plugin process (a node that dies)
//
// At end of input every instance is killed. Background calls still open then end with an error.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
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

type instance struct {
	client *plugin.Client
	conn   *grpc.ClientConn
	ctx    context.Context
	cancel context.CancelFunc
}

// launch starts the plugin the way Nomad's loader does and returns the dispensed connection.
func launch(path string, logger hclog.Logger) (*instance, string, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  2,
			MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
			MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
		},
		Plugins:          map[string]plugin.Plugin{"driver": connPlugin{}},
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, "client", err
	}
	ping := ""
	if err := rpc.Ping(); err != nil {
		ping = err.Error()
	}
	raw, err := rpc.Dispense("driver")
	if err != nil {
		client.Kill()
		return nil, "dispense", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{client: client, conn: raw.(*grpc.ClientConn), ctx: ctx, cancel: cancel}
	if ping != "" {
		return inst, "ping", &pingError{ping}
	}
	return inst, "", nil
}

type pingError struct{ msg string }

func (p *pingError) Error() string { return p.msg }

func (inst *instance) invoke(method, hexReq string, timeout time.Duration) map[string]interface{} {
	req, _ := hex.DecodeString(hexReq)
	var resp []byte
	ctx, cancel := context.WithTimeout(inst.ctx, timeout)
	defer cancel()
	err := inst.conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodec(rawCodec{}))
	result := map[string]interface{}{"method": method, "response": hex.EncodeToString(resp)}
	if err != nil {
		result["error"] = err.Error()
	}
	return result
}

func (inst *instance) kill() map[string]interface{} {
	started := time.Now()
	inst.client.Kill()
	inst.cancel()
	return map[string]interface{}{"seconds": time.Since(started).Seconds(), "exited": inst.client.Exited()}
}

func newLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "gohost", Output: os.Stderr, Level: hclog.Trace, JSONFormat: true})
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-i" {
		interactive(os.Args[2])
		return
	}
	out := json.NewEncoder(os.Stdout)
	inst, step, err := launch(os.Args[1], newLogger())
	if err != nil && step != "ping" {
		out.Encode(map[string]string{"step": step, "error": err.Error()})
		os.Exit(1)
	}
	ping := ""
	if err != nil {
		ping = err.Error()
	}
	out.Encode(map[string]string{"step": "ping", "error": ping})
	for _, call := range os.Args[2:] {
		parts := strings.SplitN(call, ":", 2)
		result := inst.invoke(parts[0], parts[1], 10*time.Second)
		result["step"] = "call"
		out.Encode(result)
	}
	result := inst.kill()
	result["step"] = "kill"
	out.Encode(result)
}

type command struct {
	ID       int     `json:"id"`
	Op       string  `json:"op"`
	Inst     string  `json:"inst"`
	Method   string  `json:"method"`
	Request  string  `json:"request"`
	TimeoutS float64 `json:"timeout"`
}

func interactive(path string) {
	logger := newLogger()
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(id int, fields map[string]interface{}) {
		fields["id"] = id
		mu.Lock()
		enc.Encode(fields)
		mu.Unlock()
	}
	instances := map[string]*instance{}
	var background sync.WaitGroup
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		var cmd command
		if err := json.Unmarshal(scanner.Bytes(), &cmd); err != nil {
			emit(0, map[string]interface{}{"step": "input", "error": err.Error()})
			continue
		}
		timeout := 10 * time.Second
		if cmd.TimeoutS > 0 {
			timeout = time.Duration(cmd.TimeoutS * float64(time.Second))
		}
		inst := instances[cmd.Inst]
		if cmd.Op != "launch" && inst == nil {
			emit(cmd.ID, map[string]interface{}{"step": cmd.Op, "error": "no such instance: " + cmd.Inst})
			continue
		}
		switch cmd.Op {
		case "launch":
			launched, step, err := launch(path, logger.Named(cmd.Inst))
			if launched != nil {
				instances[cmd.Inst] = launched
			}
			result := map[string]interface{}{"step": "launch"}
			if err != nil {
				result["error"] = step + ": " + err.Error()
			}
			emit(cmd.ID, result)
		case "call":
			result := inst.invoke(cmd.Method, cmd.Request, timeout)
			result["step"] = "call"
			emit(cmd.ID, result)
		case "start":
			emit(cmd.ID, map[string]interface{}{"step": "started"})
			background.Add(1)
			go func(cmd command, inst *instance) {
				defer background.Done()
				result := inst.invoke(cmd.Method, cmd.Request, timeout)
				result["step"] = "done"
				emit(cmd.ID, result)
			}(cmd, inst)
		case "crash":
			result := map[string]interface{}{"step": "crash"}
			if rc := inst.client.ReattachConfig(); rc != nil && rc.Pid > 0 {
				if err := syscall.Kill(rc.Pid, syscall.SIGKILL); err != nil {
					result["error"] = err.Error()
				}
			} else {
				result["error"] = "no plugin pid"
			}
			inst.cancel()
			delete(instances, cmd.Inst)
			emit(cmd.ID, result)
		case "kill":
			result := inst.kill()
			result["step"] = "kill"
			delete(instances, cmd.Inst)
			emit(cmd.ID, result)
		default:
			emit(cmd.ID, map[string]interface{}{"step": cmd.Op, "error": "unknown op"})
		}
	}
	for name, inst := range instances {
		result := inst.kill()
		result["step"] = "kill"
		result["inst"] = name
		emit(0, result)
	}
	background.Wait()
}
