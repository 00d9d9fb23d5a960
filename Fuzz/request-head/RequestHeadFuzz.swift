import FuzzSupport
@testable import KeywardGateway

/// The request head every model request is routed by (model, stream, store), read from the raw
/// body before anything else: on any bytes it is a head or a clear error, never a trap.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: data, count: count))
    _ = try? RequestHead.parse(body)
    return 0
}

@_cdecl("fuzz_request_head_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
