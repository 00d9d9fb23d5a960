import Foundation
import KeywardJSON

/// The pure parts of a Responses turn: what its input is as a list of items, the context rebuilt
/// from earlier turns, the request an upstream gets, and the response as Keyward returns it.
/// Items are kept as the JSON they came in (any item type, replayed as it was).
enum ResponseItems {
    /// A request's `input` as a list of items: a string is one user message; absent, no items if
    /// `optional` (a turn that continues a context), else 400.
    static func input(_ value: Any?, optional: Bool = false) throws -> [Any] {
        switch value {
        case let text as String: return [["role": "user", "content": text]]
        case let items as [Any]:
            guard items.allSatisfy({ $0 is [String: Any] }) else {
                throw GatewayError.invalidRequest("every input item must be an object", code: "invalid_field")
            }
            return items
        case nil:
            guard optional else { throw GatewayError.invalidRequest("input is required", code: "missing_field") }
            return []
        default: throw GatewayError.invalidRequest("input must be a string or a list of items", code: "invalid_field")
        }
    }

    /// One earlier turn, as stored (JSON, as Keyward wrote it): its input items (an array) and its
    /// response (an object whose `output` continues it).
    struct Turn {
        var input: [UInt8]
        var response: [UInt8]
    }

    /// The whole context before a new input, oldest first: each earlier turn's input then output
    /// items (instructions are per turn, as OpenAI keeps them). Each part is the inside of a JSON
    /// array, taken from the stored bytes without decoding them: a long chain costs copies, not
    /// parses.
    static func context(_ turns: [Turn]) -> [ArraySlice<UInt8>] {
        turns.flatMap { turn -> [ArraySlice<UInt8>] in
            let output = JSONScanner.valueRange(of: "output", in: turn.response).flatMap { arrayContents(turn.response[$0]) }
            return [arrayContents(turn.input[...]), output].compactMap { $0 }.filter { !$0.isEmpty }
        }
    }

    /// The items of a JSON array: the bytes between its brackets, nil if it is not an array.
    static func arrayContents(_ json: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let space: Set<UInt8> = [0x20, 0x0A, 0x0D, 0x09]
        guard let first = json.firstIndex(where: { !space.contains($0) }), json[first] == UInt8(ascii: "["),
              let last = json.lastIndex(where: { !space.contains($0) }), json[last] == UInt8(ascii: "]"), first < last else { return nil }
        let inner = json[(first + 1)..<last]
        guard let a = inner.firstIndex(where: { !space.contains($0) }), let b = inner.lastIndex(where: { !space.contains($0) }) else {
            return inner[inner.startIndex..<inner.startIndex]
        }
        return inner[a...b]
    }

    /// The request an upstream gets, as JSON: ``upstreamRequest(_:storing:)`` with `input` the
    /// items of `parts` (insides of JSON arrays) in order.
    static func upstreamBody(_ body: [String: Any], input parts: [ArraySlice<UInt8>], storing: Bool) throws -> [UInt8] {
        var rest = upstreamRequest(body, storing: storing)
        rest["input"] = nil
        var out = Array(#"{"input":["#.utf8)
        for (i, part) in parts.filter({ !$0.isEmpty }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += part
        }
        out.append(UInt8(ascii: "]"))
        let others = Array(try JSONSerialization.data(withJSONObject: rest))
        if others.count > 2 {
            out.append(UInt8(ascii: ","))
            out += others[1...]  // past its "{", to its "}"
        } else {
            out.append(UInt8(ascii: "}"))
        }
        return out
    }

    /// The request an upstream gets, but its input: stateless (`store: false`), no
    /// `previous_response_id` or `conversation` (the upstream keeps nothing and looks nothing up);
    /// when the turn is stored, reasoning comes back encrypted so that it can be replayed.
    static func upstreamRequest(_ body: [String: Any], storing: Bool) -> [String: Any] {
        var r = body
        r["store"] = false
        r["previous_response_id"] = nil
        r["conversation"] = nil
        if storing {
            var include = (r["include"] as? [String]) ?? []
            if !include.contains("reasoning.encrypted_content") { include.append("reasoning.encrypted_content") }
            r["include"] = include
        }
        return r
    }

    /// The upstream's response object as Keyward answers it: Keyward's id, the client's
    /// `previous_response_id` or conversation, and whether Keyward stored it.
    static func patched(_ response: [String: Any], id: String, previous: String?, conversation: String? = nil, stored: Bool) -> [String: Any] {
        var r = response
        r["id"] = id
        r["previous_response_id"] = previous ?? NSNull()
        r["conversation"] = conversation.map { ["id": $0] } ?? NSNull()
        r["store"] = stored
        return r
    }

    /// Input items as `input_items` lists them: each with an id (the item's own, or one derived
    /// from the response's) and the shape OpenAI lists (a `message` with a list of content parts).
    static func listed(_ items: [Any], responseID: String) -> [[String: Any]] {
        items.enumerated().map { i, value in
            var item = listedShape(value)
            if item["id"] == nil { item["id"] = "\(responseID)_in\(i)" }
            return item
        }
    }

    /// An item in the shape OpenAI lists: a message typed `message`, its text a list of parts.
    private static func listedShape(_ value: Any) -> [String: Any] {
        var item = value as? [String: Any] ?? [:]
        if item["type"] == nil, item["role"] != nil { item["type"] = "message" }
        if item["type"] as? String == "message", let text = item["content"] as? String {
            item["content"] = [["type": item["role"] as? String == "assistant" ? "output_text" : "input_text", "text": text]]
        }
        return item
    }

    /// An item as a conversation keeps and lists it: a `message` (content as a list of parts), with
    /// an id (its own, or a new one).
    static func conversationItem(_ value: Any) -> [String: Any] {
        var item = listedShape(value)
        if item["type"] as? String == "message", item["status"] == nil { item["status"] = "completed" }
        if item["id"] == nil { item["id"] = Tokens.identifier(item["type"] as? String == "message" ? "msg_" : "item_") }
        return item
    }

    /// A conversation's item as an upstream gets it: the ids and status Keyward gave to the
    /// client's own messages are not the provider's, which would look them up.
    static func upstreamItem(_ item: [String: Any]) -> [String: Any] {
        guard item["type"] as? String == "message", item["role"] as? String != "assistant" else { return item }
        var i = item
        i["id"] = nil
        i["status"] = nil
        return i
    }

    /// The SSE event types that carry the whole response object.
    static let responseEvents: Set<String> = [
        "response.created", "response.queued", "response.in_progress", "response.completed", "response.failed", "response.incomplete",
    ]
    /// Those that end it: the response they carry is the one stored.
    static let finalEvents: Set<String> = ["response.completed", "response.failed", "response.incomplete"]
}
