import Foundation

/// The pure parts of a Responses turn: what its input is as a list of items, the context rebuilt
/// from earlier turns, the request an upstream gets, and the response as Keyward returns it.
/// Items are kept as the JSON they came in (any item type, replayed as it was).
enum ResponseItems {
    /// A request's `input` as a list of items: a string is one user message.
    static func input(_ value: Any?) throws -> [Any] {
        switch value {
        case let text as String: return [["role": "user", "content": text]]
        case let items as [Any]:
            guard items.allSatisfy({ $0 is [String: Any] }) else {
                throw GatewayError.invalidRequest("every input item must be an object", code: "invalid_field")
            }
            return items
        case nil: throw GatewayError.invalidRequest("input is required", code: "missing_field")
        default: throw GatewayError.invalidRequest("input must be a string or a list of items", code: "invalid_field")
        }
    }

    /// One earlier turn, as stored: its input items and its response (whose `output` continues it).
    struct Turn {
        var input: [Any]
        var output: [Any]
    }

    /// The whole context of a turn, oldest first: each earlier turn's input then output, then the
    /// new input (instructions are per turn, as OpenAI keeps them).
    static func context(_ turns: [Turn], then input: [Any]) -> [Any] {
        turns.flatMap { $0.input + $0.output } + input
    }

    /// The request an upstream gets: stateless (`store: false`), the whole context as input, no
    /// `previous_response_id` or `conversation` (the upstream keeps nothing and looks nothing up);
    /// when the turn is stored, reasoning comes back encrypted so that it can be replayed.
    static func upstreamRequest(_ body: [String: Any], context: [Any], storing: Bool) -> [String: Any] {
        var r = body
        r["input"] = context
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
            var item = value as? [String: Any] ?? [:]
            if item["type"] == nil, item["role"] != nil { item["type"] = "message" }
            if item["type"] as? String == "message", let text = item["content"] as? String {
                let part = item["role"] as? String == "assistant" ? "output_text" : "input_text"
                item["content"] = [["type": part, "text": text]]
            }
            if item["id"] == nil { item["id"] = "\(responseID)_in\(i)" }
            return item
        }
    }

    /// An item as a conversation keeps and lists it: a `message` (content as a list of parts), with
    /// an id (its own, or a new one).
    static func conversationItem(_ value: Any) -> [String: Any] {
        var item = value as? [String: Any] ?? [:]
        if item["type"] == nil, item["role"] != nil { item["type"] = "message" }
        if item["type"] as? String == "message" {
            if let text = item["content"] as? String {
                item["content"] = [["type": item["role"] as? String == "assistant" ? "output_text" : "input_text", "text": text]]
            }
            if item["status"] == nil { item["status"] = "completed" }
        }
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
