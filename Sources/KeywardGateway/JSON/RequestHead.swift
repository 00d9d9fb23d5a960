import KeywardJSON

/// The fields the gateway reads from an AI request body (`model`, `stream`, `store`); every other
/// byte passes through untouched.
///
/// Read in one pass that also checks the whole body is JSON (RFC 8259: structure, numbers,
/// escapes, UTF-8, nesting at most 512 deep), as a strict parser would: Foundation's JSONDecoder
/// took ~3 % of the gateway's CPU for these three fields.
struct RequestHead: Equatable {
    var model: String
    var stream: Bool?
    var store: Bool?

    /// Parses `body`; throws the same 400 errors as decoding it would (`invalid_json` saying at
    /// which character, `missing_field`, `invalid_field`).
    static func parse(_ body: [UInt8]) throws -> RequestHead {
        var scanner = JSONScanner(body, keys: keys)
        do { try scanner.scanDocument() } catch {
            throw GatewayError.invalidRequest("the body is not valid JSON: \(error.reason) at character \(error.offset)", code: "invalid_json")
        }
        guard scanner.topLevelIsObject else {
            throw GatewayError.invalidRequest("field '' has the wrong type", code: "invalid_field")
        }
        guard let modelRange = scanner.found[0] else {
            throw GatewayError.invalidRequest("missing required field 'model'", code: "missing_field")
        }
        guard let model = JSONScanner.string(body[modelRange]) else {
            throw GatewayError.invalidRequest("field 'model' has the wrong type", code: "invalid_field")
        }
        func flag(_ i: Int, _ name: String) throws -> Bool? {
            guard let r = scanner.found[i] else { return nil }
            switch body[r.lowerBound] {
            case UInt8(ascii: "t"): return true
            case UInt8(ascii: "f"): return false
            case UInt8(ascii: "n"): return nil
            default: throw GatewayError.invalidRequest("field '\(name)' has the wrong type", code: "invalid_field")
            }
        }
        return RequestHead(model: model, stream: try flag(1, "stream"), store: try flag(2, "store"))
    }

    private static let keys = ["model", "stream", "store"].map { Array($0.utf8) }
}
