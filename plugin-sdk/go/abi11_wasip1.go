//go:build wasip1 && !weir_abi_1_0

package weir

// ABI 1.1: weir_tick and weir.sink_topics. Build with -tags weir_abi_1_0
// for a 1.0 module (abi10_wasip1.go).

const tickExported = true

//go:wasmexport weir_abi_version
func weirAbiVersion() int32 { return AbiVersion1_1 }

//go:wasmexport weir_tick
func weirTick(watermark, processingTime int64) int32 {
	return guard("weir_tick", func() int32 { return doTick(watermark, processingTime) })
}

//go:wasmimport weir sink_topics
func wasmSinkTopics() int32

// SinkTopics returns the number of sink topics the job configures: an
// output record's Topic must be below it (ABI 1.1). A module that calls it
// imports weir.sink_topics.
func SinkTopics() int { return int(wasmSinkTopics()) }
