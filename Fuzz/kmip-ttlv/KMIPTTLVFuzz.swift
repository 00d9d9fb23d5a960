import FuzzSupport
import KeywardKeyStores

/// KMIP's TTLV decoder, which reads what a KMIP server answers: any bytes are a value or an error
/// (bounded nesting and lengths), the frame length read from a header agrees with the decoder, and
/// a value decoded encodes to bytes that decode to the same value.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: count))
    _ = TTLV.frameLength(header: bytes.prefix(8))
    guard let value = try? TTLV.decode(bytes) else { return 0 }
    precondition((try? TTLV.decode(value.encoded)) == value, "a TTLV value does not survive being encoded")
    return 0
}

@_cdecl("fuzz_kmip_ttlv_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
