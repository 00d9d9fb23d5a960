import FuzzSupport
@testable import KeywardGateway

/// The server-sent-event splitter every streamed answer passes through, fed the same bytes whole
/// and cut where the first byte says (as a transport may cut them): the same events either way,
/// and each event's wire form read back as itself.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    let step = Int(data[0]) + 1
    var whole = SSEEventSplitter()
    var events = whole.feed(bytes)
    if let last = whole.finish() { events.append(last) }
    var cut = SSEEventSplitter()
    var pieces: [SSEEvent] = []
    for start in stride(from: 0, to: bytes.count, by: step) {
        pieces += cut.feed(bytes[start..<min(start + step, bytes.count)])
    }
    if let last = cut.finish() { pieces.append(last) }
    precondition(events == pieces, "the events depend on where the stream was cut")
    for e in events {
        var again = SSEEventSplitter()
        precondition(again.feed(e.bytes) == [e], "an event's wire form does not read back as itself")
    }
    return 0
}

@_cdecl("fuzz_sse_splitter_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
