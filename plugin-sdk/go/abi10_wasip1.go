//go:build wasip1 && weir_abi_1_0

package weir

// ABI 1.0, for hosts that know no later version: no weir_tick export and
// no SinkTopics.

const tickExported = false

//go:wasmexport weir_abi_version
func weirAbiVersion() int32 { return AbiVersion }
