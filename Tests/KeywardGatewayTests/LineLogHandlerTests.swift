import Foundation
@testable import KeywardGateway
import Logging
import Testing

@Suite("Log lines")
struct LineLogHandlerTests {
    private func text(time: Int64, message: String = "m", metadata: Logger.Metadata = [:]) -> String {
        String(decoding: LineLogHandler.line(time: time, level: .info, label: "keyward", message: message, metadata: metadata), as: UTF8.self)
    }

    @Test func timesAreUTCWithMilliseconds() {
        #expect(text(time: 0) == "1970-01-01T00:00:00.000Z info keyward: m\n")
        #expect(text(time: 951_782_400_007).hasPrefix("2000-02-29T00:00:00.007Z "))  // a leap day
        #expect(text(time: -1).hasPrefix("1969-12-31T23:59:59.999Z "))
        // Against Foundation's formatter, over two centuries of random instants.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        for _ in 0..<2000 {
            let ms = Int64.random(in: 0..<7_258_118_400_000)  // 1970 … 2200
            let expected = formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000 + 0.0001))
            #expect(text(time: ms).hasPrefix(expected + " "), "\(ms)")
        }
    }

    @Test func metadataIsSortedAndNothingStartsALine() {
        let line = text(time: 0, message: "two\nlines", metadata: ["b": "x\r\ny", "a": "1", "c": "\u{1}\\"])
        #expect(line == "1970-01-01T00:00:00.000Z info keyward: two\\nlines a=1 b=x\\r\\ny c=\\x01\\\\\n")
        #expect(line.filter { $0 == "\n" }.count == 1)
    }

    @Test func oneWritePerLineToTheDescriptor() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        var logger = Logger(label: "t") { LineLogHandler(label: $0, level: .info, descriptor: fds[1]) }
        logger[metadataKey: "replica"] = "r1"
        logger.debug("not written")
        logger.info("hello", metadata: ["route": "/v1/models"])
        close(fds[1])
        let text = String(decoding: FileHandle(fileDescriptor: fds[0]).readDataToEndOfFile(), as: UTF8.self)
        #expect(text.hasSuffix(" info t: hello replica=r1 route=/v1/models\n"))
        #expect(text.filter { $0 == "\n" }.count == 1)
    }
}
