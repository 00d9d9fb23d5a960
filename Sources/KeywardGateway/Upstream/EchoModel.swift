import Foundation

/// The built-in `keyward/echo` model: answers with the last user message, so the whole flow (auth,
/// encryption, storage, retrieval, revocation) can be tried without any provider.
enum EchoModel {
    static let name = "keyward/echo"

    /// The text of the last user message of an OpenAI or Anthropic request body.
    static func lastUserText(_ body: [UInt8]) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let messages = object["messages"] as? [[String: Any]],
              let last = messages.last(where: { ($0["role"] as? String) == "user" }) else { return "" }
        if let text = last["content"] as? String { return text }
        let parts = last["content"] as? [[String: Any]] ?? []
        return parts.compactMap { $0["text"] as? String }.joined(separator: "\n")
    }

    static func tokens(_ text: String) -> Int { text.split(whereSeparator: \.isWhitespace).count }

    private static func json(_ object: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    private static func now() -> Int { Int(Date().timeIntervalSince1970) }

    static func completion(id: String, text: String) -> [UInt8] {
        json(["id": id, "object": "chat.completion", "created": now(), "model": name,
              "choices": [["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": "stop"] as [String: Any]],
              "usage": ["prompt_tokens": tokens(text), "completion_tokens": tokens(text), "total_tokens": 2 * tokens(text)]])
    }

    /// The `data:` payloads of a streamed answer: a role chunk, one chunk per word, a stop chunk.
    static func chunks(id: String, text: String) -> [[UInt8]] {
        func chunk(_ delta: [String: Any], finish: Any = NSNull()) -> [UInt8] {
            json(["id": id, "object": "chat.completion.chunk", "created": now(), "model": name,
                  "choices": [["index": 0, "delta": delta, "finish_reason": finish] as [String: Any]]])
        }
        var words: [String] = []
        var current = ""
        for ch in text {
            current.append(ch)
            if ch == " " { words.append(current); current = "" }
        }
        if !current.isEmpty { words.append(current) }
        return [chunk(["role": "assistant", "content": ""])] + words.map { chunk(["content": $0]) } + [chunk([:], finish: "stop")]
    }

    static func embedding(input: Any?) -> [UInt8] {
        let inputs: [String] = (input as? [String]) ?? [(input as? String) ?? ""]
        let data = inputs.enumerated().map { i, text -> [String: Any] in
            // A deterministic 8-dimensional vector from the text's bytes: enough to try the API.
            var v = [Double](repeating: 0, count: 8)
            for (j, b) in text.utf8.enumerated() { v[j % 8] += Double(b) / 255 }
            return ["object": "embedding", "index": i, "embedding": v]
        }
        let t = inputs.map(tokens).reduce(0, +)
        return json(["object": "list", "data": data, "model": name, "usage": ["prompt_tokens": t, "total_tokens": t]])
    }

    static func anthropicMessage(id: String, text: String) -> [UInt8] {
        json(["id": id, "type": "message", "role": "assistant", "model": name,
              "content": [["type": "text", "text": text]], "stop_reason": "end_turn", "stop_sequence": NSNull(),
              "usage": ["input_tokens": tokens(text), "output_tokens": tokens(text)]])
    }
}
