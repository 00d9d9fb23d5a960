import FuzzSupport
import KeywardJSON

/// The JSON scanner the gateway reads request heads and answers with, on any bytes: it finds keys,
/// integers and strings or says it cannot, never traps, whatever the nesting, numbers or UTF-8.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let json = Array(UnsafeBufferPointer(start: data, count: count))
    if let ranges = JSONScanner.valueRanges(of: ["model", "stream", "messages", "input", "id"], in: json) {
        for case let range? in ranges {
            precondition(range.lowerBound >= 0 && range.upperBound <= json.count)
            _ = JSONScanner.string(json[range])
            _ = JSONScanner.replacing(range, withString: "x\"\\\u{1}", in: json)
        }
    }
    _ = JSONScanner.integer(at: ["usage", "prompt_tokens"], in: json)
    _ = JSONScanner.replacingString("id", with: "chatcmpl-1", in: json)
    return 0
}

@_cdecl("fuzz_json_scanner_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
