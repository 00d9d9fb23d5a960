import Foundation
import NIOCore

/// Reads a `multipart/form-data` body (RFC 7578) as it streams in: a pure state machine fed with
/// the body's chunks, which hands out each part's head and its content as slices of those chunks,
/// so that a file part passes through without being held whole. Only a tail shorter than the
/// boundary delimiter, or a part's header block (at most 16 KiB), is ever kept between chunks.
struct MultipartReader {
    /// A part's `Content-Disposition` name and filename, and its `Content-Type`.
    struct PartHead: Equatable {
        var name: String
        var filename: String?
        var contentType: String?
    }

    enum Event: Equatable {
        case head(PartHead)
        /// Content of the current part (more may follow).
        case content(ByteBuffer)
        /// The current part is complete.
        case end
    }

    private enum State { case preamble, afterDelimiter, headers, content, done }

    static let maxHeaderBytes = 16 << 10
    static let maxParts = 64
    /// CRLF, `--`, then the boundary: what ends a part's content (the body is read as if it began
    /// with a CRLF, so the first delimiter needs no special case).
    private let delimiter: [UInt8]
    private var buffer: ByteBuffer
    private var state = State.preamble
    private var parts = 0
    /// Bytes before the first delimiter (skipped, but bounded).
    private var preamble = 0

    /// - Parameter boundary: the `boundary` parameter of the body's content type.
    init(boundary: String) {
        delimiter = Array("\r\n--\(boundary)".utf8)
        buffer = ByteBuffer(bytes: [13, 10])
    }

    /// Whether the closing delimiter has been read.
    var isComplete: Bool { state == .done }

    /// Bytes read and kept for the next chunk (internal, for a test).
    var keptBytes: Int { buffer.readableBytes }

    /// The boundary of a `multipart/form-data` content type, or a 400 that says what is wrong.
    static func boundary(contentType: String?) throws -> String {
        guard let contentType else { throw malformed("the upload must be multipart/form-data") }
        let params = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard params.first?.lowercased() == "multipart/form-data" else { throw malformed("the upload must be multipart/form-data") }
        for p in params.dropFirst() {
            guard let eq = p.firstIndex(of: "="), p[..<eq].trimmingCharacters(in: .whitespaces).lowercased() == "boundary" else { continue }
            var value = p[p.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            // RFC 2046: 1 to 70 characters, none of which ends a header value or needs quoting on the wire.
            guard (1...70).contains(value.utf8.count), value.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }), !value.hasSuffix(" ") else {
                throw malformed("the multipart boundary must be 1 to 70 printable characters")
            }
            return value
        }
        throw malformed("the multipart content type names no boundary")
    }

    static func malformed(_ message: String) -> GatewayError {
        GatewayError.invalidRequest(message, code: "invalid_multipart")
    }

    /// Adds the next chunk of the body.
    mutating func append(_ chunk: ByteBuffer) {
        guard state != .done else { return }  // the epilogue is ignored
        if buffer.readableBytes == 0 {
            buffer = chunk
        } else {
            // A fresh buffer for the kept tail and the chunk: appending to the old one would keep
            // every byte read so far alive (a ByteBuffer does not give back what was read).
            var joined = ByteBuffer()
            joined.reserveCapacity(buffer.readableBytes + chunk.readableBytes)
            joined.writeImmutableBuffer(buffer)
            joined.writeImmutableBuffer(chunk)
            buffer = joined
        }
    }

    /// The next event, or nil when more of the body is needed (or the body is complete).
    mutating func next() throws -> Event? {
        while true {
            switch state {
            case .done:
                buffer.clear()
                return nil
            case .preamble:
                // Whatever comes before the first delimiter is not content.
                guard let at = find(delimiter) else {
                    let skipped = max(0, buffer.readableBytes - (delimiter.count - 1))
                    preamble += skipped
                    guard preamble <= Self.maxHeaderBytes else { throw Self.malformed("no multipart boundary in the body's first 16 KiB") }
                    buffer.moveReaderIndex(forwardBy: skipped)
                    return nil
                }
                buffer.moveReaderIndex(forwardBy: at + delimiter.count)
                state = .afterDelimiter
            case .afterDelimiter:
                // `--` closes the body; otherwise optional whitespace, then CRLF, then a part's headers.
                let view = buffer.readableBytesView
                guard view.count >= 2 else { return nil }
                if view.starts(with: [45, 45]) {
                    state = .done
                    continue
                }
                guard let cr = view.firstIndex(where: { $0 != 32 && $0 != 9 }) else {
                    guard view.count < 256 else { throw Self.malformed("a multipart delimiter is followed by neither CRLF nor --") }
                    return nil
                }
                guard view.count - (cr - view.startIndex) >= 2 else { return nil }
                guard view[cr] == 13, view[cr + 1] == 10 else { throw Self.malformed("a multipart delimiter is followed by neither CRLF nor --") }
                buffer.moveReaderIndex(forwardBy: cr - view.startIndex + 2)
                parts += 1
                guard parts <= Self.maxParts else { throw Self.malformed("a multipart body has at most \(Self.maxParts) parts") }
                state = .headers
            case .headers:
                let block: [UInt8]
                if buffer.readableBytesView.starts(with: [13, 10]) {
                    block = []
                    buffer.moveReaderIndex(forwardBy: 2)
                } else if let at = find([13, 10, 13, 10]) {
                    block = Array(buffer.readableBytesView.prefix(at))
                    buffer.moveReaderIndex(forwardBy: at + 4)
                } else {
                    guard buffer.readableBytes <= Self.maxHeaderBytes else { throw Self.malformed("a part's headers exceed 16 KiB") }
                    return nil
                }
                guard block.count <= Self.maxHeaderBytes else { throw Self.malformed("a part's headers exceed 16 KiB") }
                state = .content
                return .head(try Self.head(block))
            case .content:
                if let at = find(delimiter) {
                    if at > 0 { return .content(buffer.readSlice(length: at)!) }
                    buffer.moveReaderIndex(forwardBy: delimiter.count)
                    state = .afterDelimiter
                    return .end
                }
                // All but a tail that may be the start of a delimiter: usually none, so that the
                // next chunk is taken as it is rather than copied behind a kept tail.
                let safe = buffer.readableBytes - pendingDelimiterPrefix()
                guard safe > 0 else { return nil }
                return .content(buffer.readSlice(length: safe)!)
            }
        }
    }

    /// At the end of the body: throws unless the closing delimiter was read.
    func finish() throws {
        guard state == .done else { throw Self.malformed("the multipart body ends before its closing boundary") }
    }

    /// Where `needle` (at least two bytes) first starts in the readable bytes.
    private func find(_ needle: [UInt8]) -> Int? {
        buffer.withUnsafeReadableBytes { hay in
            needle.withUnsafeBytes { n -> Int? in
                guard hay.count >= n.count, let base = hay.baseAddress else { return nil }
                // memchr for the first byte (a CR, rare in most content), the second byte checked
                // before the whole needle is compared (random bytes hold a CR every 256).
                var at = 0
                let last = hay.count - n.count
                while at <= last {
                    guard let p = memchr(base + at, Int32(n[0]), last - at + 1) else { return nil }
                    at = base.distance(to: UnsafeRawPointer(p))
                    if hay[at + 1] == n[1], memcmp(base + at, n.baseAddress!, n.count) == 0 { return at }
                    at += 1
                }
                return nil
            }
        }
    }

    /// The length of the longest end of the readable bytes that begins the delimiter (which the
    /// readable bytes do not hold whole): what must wait for the next chunk.
    private func pendingDelimiterPrefix() -> Int {
        buffer.withUnsafeReadableBytes { hay in
            delimiter.withUnsafeBytes { d in
                var start = max(0, hay.count - (d.count - 1))
                while start < hay.count {
                    guard let p = memchr(hay.baseAddress! + start, Int32(d[0]), hay.count - start) else { return 0 }
                    start = hay.baseAddress!.distance(to: UnsafeRawPointer(p))
                    if memcmp(hay.baseAddress! + start, d.baseAddress!, hay.count - start) == 0 { return hay.count - start }
                    start += 1
                }
                return 0
            }
        }
    }

    /// Parses a part's header block: `Content-Disposition: form-data; name="…"; filename="…"` (or
    /// RFC 5987's `filename*=UTF-8''…`) and `Content-Type`.
    static func head(_ block: [UInt8]) throws -> PartHead {
        guard let text = String(validating: block, as: UTF8.self) else { throw malformed("a part's headers are not UTF-8") }
        var disposition: String?
        var type: String?
        for line in text.components(separatedBy: "\r\n") where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw malformed("a part's header line has no colon") }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "content-disposition" { disposition = value }
            if name == "content-type" { type = value }
        }
        guard let disposition else { throw malformed("a part has no Content-Disposition") }
        let params = try parameters(disposition)
        guard params.first?.0.lowercased() == "form-data", let name = params.first(where: { $0.0 == "name" })?.1 else {
            throw malformed("a part's Content-Disposition must be form-data with a name")
        }
        var filename = params.first(where: { $0.0 == "filename" })?.1
        if let extended = params.first(where: { $0.0 == "filename*" })?.1 {
            // charset'language'percent-encoded; only UTF-8 is meaningful today.
            let pieces = extended.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
            if pieces.count == 3, pieces[0].lowercased() == "utf-8", let decoded = String(pieces[2]).removingPercentEncoding {
                filename = decoded
            }
        }
        return PartHead(name: name, filename: filename, contentType: type)
    }

    /// `token; name=value; name="quoted"` as (name lowercased, value) pairs, the first being the
    /// token with an empty value.
    static func parameters(_ value: String) throws -> [(String, String)] {
        var out: [(String, String)] = []
        var chars = Substring(value)
        func skipSpace() { chars = chars.drop { $0 == " " || $0 == "\t" } }
        let token = chars.prefix { $0 != ";" }
        out.append((token.trimmingCharacters(in: .whitespaces), ""))
        chars = chars.dropFirst(token.count)
        while !chars.isEmpty {
            guard chars.first == ";" else { throw malformed("a part's Content-Disposition is malformed") }
            chars = chars.dropFirst()
            skipSpace()
            if chars.isEmpty { break }
            let name = chars.prefix { $0 != "=" && $0 != ";" }
            chars = chars.dropFirst(name.count)
            guard chars.first == "=" else { throw malformed("a part's Content-Disposition is malformed") }
            chars = chars.dropFirst()
            var v = ""
            if chars.first == "\"" {
                chars = chars.dropFirst()
                var closed = false
                while let c = chars.first {
                    chars = chars.dropFirst()
                    if c == "\\", let next = chars.first {
                        v.append(next)
                        chars = chars.dropFirst()
                    } else if c == "\"" {
                        closed = true
                        break
                    } else {
                        v.append(c)
                    }
                }
                guard closed else { throw malformed("a part's Content-Disposition has an unclosed quote") }
            } else {
                let raw = chars.prefix { $0 != ";" }
                chars = chars.dropFirst(raw.count)
                v = raw.trimmingCharacters(in: .whitespaces)
            }
            skipSpace()
            out.append((name.trimmingCharacters(in: .whitespaces).lowercased(), v))
        }
        return out
    }
}
