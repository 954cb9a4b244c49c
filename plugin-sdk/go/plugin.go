package weir

import (
	"runtime"
	"strconv"
	"unsafe"
)

// Plugin is the logic of a plugin. One value lives per module instance,
// that is per Kafka partition; it and everything it refers to is in linear
// memory, which the host snapshots with every checkpoint.
type Plugin interface {
	// Process is called once per input batch. It emits zero, one or many
	// records per input record through out. A non-nil error fails the
	// batch: what out has buffered is still handed to the host, the
	// error's text is logged at error level (the reason the host reports)
	// and the call returns StatusPluginError.
	Process(batch *Batch, out *Output) error
}

// Initializer is implemented by a Plugin that reads its config. Init is
// called once on a fresh start, before the first batch, and never on a
// restore from a snapshot (the snapshot already holds what Init set up).
// If the plugin does not implement it, the config is ignored.
type Initializer interface {
	Init(config Config) error
}

// Ticker is implemented by a Plugin that acts on time (ABI 1.1): closing
// windows, expiring state, emitting on a schedule. OnTick is called between
// batches when the partition's event-time watermark advances, and at least
// every tick interval while the partition is idle. watermark is in ms since
// the epoch, or WatermarkNone before any record with a timestamp, or
// WatermarkEnd once a bounded input has ended (close everything);
// processingTime is the host's wall clock in ms since the epoch. It may
// emit through out; a non-nil error fails the call as in Process. If the
// plugin does not implement it, weir_tick does nothing and returns
// StatusOk.
type Ticker interface {
	OnTick(watermark, processingTime int64, out *Output) error
}

// Statuses the SDK returns from weir_process, weir_init and weir_tick
// (any value but StatusOk fails the call). They are the convention that
// the Rust, C and AssemblyScript SDKs follow too.
const (
	// StatusPluginError: Init, Process or OnTick returned an error or
	// panicked.
	StatusPluginError int32 = 1
	// StatusBadInput: the input batch or config block could not be
	// decoded.
	StatusBadInput int32 = 2
	// StatusEmitRefused: weir.emit refused output during the call.
	StatusEmitRefused int32 = 3
)

// The module's one plugin and the buffers the SDK keeps for it. They are
// package variables, so they live in linear memory like the plugin's own
// state.
var (
	plugin Plugin
	initer Initializer
	ticker Ticker
	input  []byte
	batch  Batch
	output Output
)

// Register makes p the module's plugin. Call it once, from an init
// function of package main: a WASI reactor runs init functions when the
// host instantiates the module, but never main.
func Register(p Plugin) {
	if p == nil {
		panic("weir.Register: nil Plugin")
	}
	if plugin != nil {
		panic("weir.Register: called twice; a module holds one plugin")
	}
	plugin = p
	initer, _ = p.(Initializer)
	ticker, _ = p.(Ticker)
	if ticker != nil && !tickExported {
		Warn("weir: the plugin implements OnTick, but this module was built with -tags weir_abi_1_0, which has no weir_tick export: OnTick is never called")
	}
}

// inputBuffer returns the input buffer, grown to at least size bytes:
// 8-aligned (it is made of uint64 words), owned by the SDK, kept across
// calls. A batch too large for memory ends the instance with Go's "out
// of memory" fatal error (exit 2).
func inputBuffer(size int32) []byte {
	if len(input) < int(size) || input == nil {
		n := max(64<<10, 2*len(input))
		for n < int(size) {
			n *= 2
		}
		words := make([]uint64, n/8)
		input = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
	}
	return input
}

// inputAt returns [ptr, ptr+n) of the input buffer, where the host writes
// batches and the config; ok is false if that is not where it lies.
func inputAt(ptr uintptr, n int32) (buf []byte, ok bool) {
	if input == nil || n < 0 || int(n) > len(input) || ptr != uintptr(unsafe.Pointer(unsafe.SliceData(input))) {
		return nil, false
	}
	return input[:n], true
}

// badPointer logs why an export got a range outside the input buffer.
func badPointer(export string, ptr uintptr, n int32) int32 {
	Error(export + ": [" + strconv.FormatUint(uint64(ptr), 10) + ", +" + itoa(n) +
		") is not the range weir_input_buffer returned")
	return StatusBadInput
}

// doInit is weir_init: decode the config block and call Init.
func doInit(buf []byte) int32 {
	config, err := decodeConfig(buf)
	if err != nil {
		Error("init failed: config block: " + err.Error())
		return StatusBadInput
	}
	if plugin == nil {
		Error(noPlugin)
		return StatusPluginError
	}
	if initer != nil {
		if err := initer.Init(config); err != nil {
			Error("init failed: " + err.Error())
			return StatusPluginError
		}
	}
	return StatusOk
}

// doProcess is weir_process: call Process, send output. The batch's
// records are checked as Process reads them (Batch.Records).
func doProcess(buf []byte) int32 {
	output.reset()
	if plugin == nil {
		Error(noPlugin)
		return StatusPluginError
	}
	if len(buf) < BatchHeaderLen {
		Error("input batch: " + errTruncated.Error())
		return StatusBadInput
	}
	batch = Batch{buf: buf, count: int(le32(buf))}
	err := plugin.Process(&batch, &output)
	batch = Batch{}
	return finish(err)
}

// doTick is weir_tick: call OnTick, send output.
func doTick(watermark, processingTime int64) int32 {
	output.reset()
	if ticker == nil {
		return StatusOk
	}
	return finish(ticker.OnTick(watermark, processingTime, &output))
}

// finish ends a call that may have emitted: flush, then report err or a
// refused emit.
func finish(err error) int32 {
	output.Flush()
	if err != nil {
		Error(err.Error())
		return StatusPluginError
	}
	if rc := output.emitErr; rc != EmitOk {
		Error("weir.emit returned " + itoa(rc))
		return StatusEmitRefused
	}
	return StatusOk
}

// itoa formats n in decimal.
func itoa(n int32) string { return strconv.Itoa(int(n)) }

const noPlugin = "weir: no plugin registered: call weir.Register from an init function of package main"

// guard runs an export's body, turning a panic into a logged error and
// StatusPluginError (StatusBadInput for a malformed batch), with the
// output of the failed call dropped.
func guard(export string, body func() int32) (status int32) {
	defer func() {
		if v := recover(); v != nil {
			output.reset()
			batch = Batch{}
			if bad, ok := v.(badInput); ok {
				Error("input batch: " + bad.err.Error())
				status = StatusBadInput
				return
			}
			stack := make([]byte, 16<<10)
			Debug(export + ": " + string(stack[:runtime.Stack(stack, false)]))
			Error(export + ": panic: " + panicText(v))
			status = StatusPluginError
		}
	}()
	return body()
}

// panicText describes a recovered panic value without fmt.
func panicText(v any) string {
	switch v := v.(type) {
	case error:
		return v.Error()
	case string:
		return v
	case interface{ String() string }:
		return v.String()
	case int:
		return strconv.Itoa(v)
	default:
		return "a value that is not an error or a string"
	}
}
