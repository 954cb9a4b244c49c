// Package weir is the Weir plugin SDK for Go: it turns a Go package into a
// Weir plugin, a WebAssembly module that the Weir stream host runs once per
// Kafka partition (docs/ABI.md is the contract, byte by byte).
//
// A plugin is a value that implements [Plugin], registered with [Register]
// from an init function of package main. The SDK owns the ABI: it exports
// weir_abi_version, weir_input_buffer, weir_init, weir_process and (ABI 1.1)
// weir_tick, checks each input batch, hands it to [Plugin.Process] as a
// [Batch] whose records are views into the input buffer (no copy, no
// allocation per record), and sends what the plugin emits into the
// [Output] to the host in chunks of up to [FlushAt] bytes.
//
//	package main
//
//	import "weir.dev/weir"
//
//	type upper struct{}
//
//	func (upper) Process(batch *weir.Batch, out *weir.Output) error {
//		for r := range batch.Records() {
//			out.EmitEdited(weir.Forward(r), func(v []byte) {
//				for i, c := range v {
//					if 'a' <= c && c <= 'z' {
//						v[i] = c - 'a' + 'A'
//					}
//				}
//			})
//		}
//		return nil
//	}
//
//	func init() { weir.Register(upper{}) }
//
//	func main() {}
//
// Build it as a WASI reactor (main is never run; init functions are):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o upper.wasm .
//
// State is ordinary Go data held by the plugin value or by package
// variables (maps, slices, structs). It lives in the module's linear
// memory, which the host snapshots with every checkpoint and puts back on
// restore instead of calling Init again. Do not keep state anywhere else,
// and do not leave work to goroutines between calls: they run only while
// a call is blocked. Time passes for the plugin through OnTick; the host
// keeps the monotonic clock continuous across restores and turns sleeps
// into clock moves (docs/ABI.md, section 14a).
//
// By default a module speaks ABI 1.1 ([AbiVersion1_1]): it exports
// weir_tick and may call [SinkTopics], and only a host that knows ABI 1.1
// loads it. Build with -tags weir_abi_1_0 for a module that a 1.0 host
// loads: it then has no weir_tick export (a [Ticker] is never called) and
// no [SinkTopics].
//
// Outside wasm the package compiles too, with stand-ins for the host calls
// (Output's records are dropped, log lines go to stderr, SinkTopics returns
// 1), so that go vet, go test and editors work on the build machine.
package weir
