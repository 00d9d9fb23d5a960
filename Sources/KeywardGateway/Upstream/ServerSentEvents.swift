import Foundation

/// Splits a server-sent-event stream into whole events as bytes arrive, however the transport
/// cut them. Pure: no I/O.
struct SSEEventSplitter {
    private var buffer: [UInt8] = []
    /// Where the search for a blank line goes on: the bytes before it hold none (an event that
    /// comes in many pieces is scanned once, not once per piece).
    private var scanned = 0

    /// The events completed by `bytes`, each without its terminating blank line.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [SSEEvent] {
        buffer.append(contentsOf: bytes.lazy.filter { $0 != 13 })  // CRLF → LF
        var events: [SSEEvent] = []
        var start = 0
        var i = scanned
        while i + 1 < buffer.count {
            if buffer[i] == 10 && buffer[i + 1] == 10 {
                events.append(SSEEvent(Array(buffer[start..<i])))
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        buffer.removeFirst(start)
        scanned = i - start
        return events
    }

    /// What is left at the end of the stream, as a last event if it holds anything.
    mutating func finish() -> SSEEvent? {
        defer { buffer = []; scanned = 0 }
        let rest = buffer.drop { $0 == 10 }
        return rest.isEmpty ? nil : SSEEvent(Array(rest))
    }
}

/// One server-sent event: its `event:` name and joined `data:` lines.
struct SSEEvent: Equatable {
    var name: String?
    var data: [UInt8]
    /// Lines other than `event:` and `data:` (`id:`, `retry:`, comments), kept verbatim.
    var otherLines: [[UInt8]] = []

    init(name: String? = nil, data: [UInt8], otherLines: [[UInt8]] = []) {
        self.name = name
        self.data = data
        self.otherLines = otherLines
    }

    init(_ raw: [UInt8]) {
        var dataLines: [ArraySlice<UInt8>] = []
        for line in raw.split(separator: 10, omittingEmptySubsequences: false) {
            if line.starts(with: "data:".utf8) {
                var value = line.dropFirst(5)
                if value.first == 32 { value = value.dropFirst() }
                dataLines.append(value)
            } else if line.starts(with: "event:".utf8) {
                name = String(decoding: line.dropFirst(6), as: UTF8.self).trimmingCharacters(in: .whitespaces)
            } else if !line.isEmpty {
                otherLines.append(Array(line))
            }
        }
        data = Array(dataLines.joined(separator: [10]))
    }

    /// The wire form, ending with the blank line.
    var bytes: [UInt8] {
        var out: [UInt8] = []
        if let name { out += Array("event: \(name)\n".utf8) }
        for line in otherLines { out += line + [10] }
        for line in data.split(separator: 10, omittingEmptySubsequences: false) { out += Array("data: ".utf8) + line + [10] }
        out.append(10)
        return out
    }
}

/// Rebuilds one chat.completion object from the chunks of an OpenAI stream, for storage.
struct ChatStreamAssembler {
    private var base: [String: Any] = [:]
    private var choices: [Int: [String: Any]] = [:]
    private var contents: [Int: String] = [:]
    private var toolCalls: [Int: [Int: [String: Any]]] = [:]
    private(set) var usage: [String: Any]?
    private(set) var chunks = 0

    mutating func add(_ chunk: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(chunk)) as? [String: Any] else { return }
        chunks += 1
        for key in ["model", "created", "system_fingerprint", "service_tier"] where base[key] == nil {
            if let v = object[key], !(v is NSNull) { base[key] = v }
        }
        if let u = object["usage"] as? [String: Any] { usage = u }
        for choice in object["choices"] as? [[String: Any]] ?? [] {
            let index = (choice["index"] as? Int) ?? 0
            var c = choices[index] ?? ["index": index, "message": ["role": "assistant"] as [String: Any], "finish_reason": NSNull()]
            if let reason = choice["finish_reason"], !(reason is NSNull) { c["finish_reason"] = reason }
            if let logprobs = choice["logprobs"], !(logprobs is NSNull) { c["logprobs"] = logprobs }
            if let delta = choice["delta"] as? [String: Any] {
                var message = c["message"] as? [String: Any] ?? [:]
                if let role = delta["role"] as? String { message["role"] = role }
                if let text = delta["content"] as? String { contents[index, default: ""] += text }
                if let refusal = delta["refusal"] as? String { message["refusal"] = ((message["refusal"] as? String) ?? "") + refusal }
                for call in delta["tool_calls"] as? [[String: Any]] ?? [] {
                    let ci = (call["index"] as? Int) ?? 0
                    var merged = toolCalls[index, default: [:]][ci] ?? ["type": "function", "function": ["name": "", "arguments": ""]]
                    if let id = call["id"] as? String { merged["id"] = id }
                    if let type = call["type"] as? String { merged["type"] = type }
                    if let f = call["function"] as? [String: Any] {
                        var mf = merged["function"] as? [String: String] ?? [:]
                        if let name = f["name"] as? String { mf["name", default: ""] += name }
                        if let args = f["arguments"] as? String { mf["arguments", default: ""] += args }
                        merged["function"] = mf
                    }
                    toolCalls[index, default: [:]][ci] = merged
                }
                c["message"] = message
            }
            choices[index] = c
        }
    }

    /// The assembled completion as JSON, under `id`.
    func assembled(id: String) -> [UInt8] {
        var object = base
        object["id"] = id
        object["object"] = "chat.completion"
        object["choices"] = choices.keys.sorted().map { index -> [String: Any] in
            var c = choices[index]!
            var message = c["message"] as? [String: Any] ?? [:]
            message["content"] = contents[index].map { $0 as Any } ?? NSNull()
            if let calls = toolCalls[index] { message["tool_calls"] = calls.keys.sorted().map { calls[$0]! } }
            c["message"] = message
            return c
        }
        if let usage { object["usage"] = usage }
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}

/// Rebuilds one Anthropic message from the events of a streamed `/v1/messages` answer.
struct AnthropicStreamAssembler {
    private var message: [String: Any] = [:]
    private var blocks: [Int: [String: Any]] = [:]
    private var partialJSON: [Int: String] = [:]

    mutating func add(_ data: [UInt8]) {
        guard let event = try? JSONSerialization.jsonObject(with: Data(data)) as? [String: Any],
              let type = event["type"] as? String else { return }
        switch type {
        case "message_start":
            message = event["message"] as? [String: Any] ?? [:]
        case "content_block_start":
            if let index = event["index"] as? Int, let block = event["content_block"] as? [String: Any] { blocks[index] = block }
        case "content_block_delta":
            guard let index = event["index"] as? Int, let delta = event["delta"] as? [String: Any] else { return }
            var block = blocks[index] ?? ["type": "text", "text": ""]
            if let text = delta["text"] as? String { block["text"] = ((block["text"] as? String) ?? "") + text }
            if let thinking = delta["thinking"] as? String { block["thinking"] = ((block["thinking"] as? String) ?? "") + thinking }
            if let json = delta["partial_json"] as? String { partialJSON[index, default: ""] += json }
            blocks[index] = block
        case "message_delta":
            if let delta = event["delta"] as? [String: Any] { for (k, v) in delta { message[k] = v } }
            if let u = event["usage"] as? [String: Any] {
                var usage = message["usage"] as? [String: Any] ?? [:]
                for (k, v) in u { usage[k] = v }
                message["usage"] = usage
            }
        default:
            break
        }
    }

    /// Whether a `message_start` arrived: there is an answer to store.
    var started: Bool { !message.isEmpty }

    var promptTokens: Int? { (message["usage"] as? [String: Any])?["input_tokens"] as? Int }
    var completionTokens: Int? { (message["usage"] as? [String: Any])?["output_tokens"] as? Int }

    func assembled() -> [UInt8] {
        var m = message
        m["content"] = blocks.keys.sorted().map { index -> [String: Any] in
            var block = blocks[index]!
            if let json = partialJSON[index] {
                block["input"] = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) ?? json
            }
            return block
        }
        return Array((try? JSONSerialization.data(withJSONObject: m, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}
