import KeywardJSON

/// Splits a JSONL stream into lines as its bytes arrive in any pieces (pure: fed, then asked).
/// A line longer than `limit` is an error, so that one line never holds more than that in memory.
struct JSONLines {
    let limit: Int
    private var pending: [UInt8] = []
    private var start = 0
    /// Where the search for the next newline goes on: bytes before it were searched already
    /// (a long line arriving in many pieces is scanned once, not once per piece).
    private var scanned = 0

    init(limit: Int) { self.limit = limit }

    /// Bytes of the stream, in order.
    mutating func append(_ bytes: some Collection<UInt8>) {
        if start > 0, start >= pending.count / 2 {
            pending.removeFirst(start)
            scanned -= start
            start = 0
        }
        pending.append(contentsOf: bytes)
    }

    /// The next complete line (without its `\n` or `\r\n`), or nil until more bytes come.
    mutating func next() throws(BatchLineError) -> [UInt8]? {
        guard let end = pending[max(start, scanned)...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = pending.count
            if pending.count - start > limit { throw BatchLineError("line_too_long", "a line is longer than \(limit) bytes") }
            return nil
        }
        var line = Array(pending[start..<end])
        start = end + 1
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        guard line.count <= limit else { throw BatchLineError("line_too_long", "a line is longer than \(limit) bytes") }
        return line
    }

    /// The last line, if the stream did not end with a newline.
    mutating func finish() -> [UInt8]? {
        defer { pending = []; start = 0; scanned = 0 }
        return start < pending.count ? Array(pending[start...]) : nil
    }
}

/// Why a line of a batch's input cannot run (its code and message are OpenAI's `errors.data`
/// entries; neither repeats the line's content).
struct BatchLineError: Error, Equatable {
    let code: String
    let message: String
    init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// One request of a batch's input file: `{"custom_id", "method": "POST", "url", "body"}`.
struct BatchLine: Equatable {
    /// The custom id, and its JSON literal as written (copied into the result line verbatim).
    let customID: String
    let customIDJSON: [UInt8]
    /// The request body as written.
    let body: [UInt8]
    let model: String

    /// The line, checked against the batch's endpoint.
    static func parse(_ line: [UInt8], endpoint: String) throws(BatchLineError) -> BatchLine {
        guard line.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) == UInt8(ascii: "{"),
              let found = JSONScanner.valueRanges(of: ["custom_id", "method", "url", "body"], in: line) else {
            throw BatchLineError("invalid_json_line", "the line is not a JSON object")
        }
        guard let idRange = found[0], let customID = JSONScanner.string(line[idRange]), !customID.isEmpty else {
            throw BatchLineError("missing_custom_id", "custom_id must be a non-empty string")
        }
        guard customID.utf8.count <= 512 else { throw BatchLineError("invalid_custom_id", "custom_id is longer than 512 bytes") }
        guard let m = found[1], JSONScanner.string(line[m]) == "POST" else {
            throw BatchLineError("invalid_method", "method must be POST")
        }
        guard let u = found[2], JSONScanner.string(line[u]) == endpoint else {
            throw BatchLineError("mismatched_endpoint", "url must be the batch's endpoint, \(endpoint)")
        }
        guard let b = found[3], line[b.lowerBound] == UInt8(ascii: "{") else {
            throw BatchLineError("missing_body", "body must be a JSON object")
        }
        let body = Array(line[b])
        let head: RequestHead
        do { head = try RequestHead.parse(body) } catch {
            throw BatchLineError("invalid_body", (error as? GatewayError)?.message ?? "the body is not a valid request")
        }
        guard head.stream != true else { throw BatchLineError("invalid_body", "a batch request cannot stream") }
        return BatchLine(customID: customID, customIDJSON: Array(line[idRange]), body: body, model: head.model)
    }
}
