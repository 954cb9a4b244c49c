//go:build wasip1

package weir

import "unsafe"

// The host imports (docs/ABI.md section 3).

//go:wasmimport weir emit
//go:noescape
func wasmEmit(ptr unsafe.Pointer, n int32) int32

//go:wasmimport weir log
//go:noescape
func wasmLog(level int32, ptr unsafe.Pointer, n int32)

func hostEmit(batch []byte) int32 {
	return wasmEmit(unsafe.Pointer(unsafe.SliceData(batch)), int32(len(batch)))
}

func hostLog(level int32, line string) {
	wasmLog(level, unsafe.Pointer(unsafe.StringData(line)), int32(len(line)))
}

// The exports of ABI 1.0 (docs/ABI.md section 2); weir_abi_version is in
// abi11_wasip1.go or abi10_wasip1.go.

//go:wasmexport weir_input_buffer
func weirInputBuffer(size int32) int32 {
	if size < 0 {
		// The host never asks for this; trap (exit 2) with a reason.
		msg := "weir_input_buffer: negative size " + itoa(size)
		Error(msg)
		panic(msg)
	}
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(inputBuffer(size)))))
}

//go:wasmexport weir_init
func weirInit(ptr, n int32) int32 {
	return guard("weir_init", func() int32 {
		buf, ok := inputAt(uintptr(ptr), n)
		if !ok {
			return badPointer("weir_init", uintptr(ptr), n)
		}
		return doInit(buf)
	})
}

//go:wasmexport weir_process
func weirProcess(ptr, n int32) int32 {
	return guard("weir_process", func() int32 {
		buf, ok := inputAt(uintptr(ptr), n)
		if !ok {
			return badPointer("weir_process", uintptr(ptr), n)
		}
		return doProcess(buf)
	})
}
