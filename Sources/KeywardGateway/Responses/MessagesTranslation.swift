import Foundation

/// The Responses API for Anthropic upstreams: a Responses request as a Messages request, and the
/// answer (whole or streamed) as Responses output items and events. Function calls are
/// `tool_use` blocks and their outputs `tool_result` blocks; reasoning items are left out.
enum MessagesTranslation {
    /// The Messages request for a Responses request whose whole input (context included) is `items`.
    static func messagesRequest(_ body: [String: Any], items: [Any], stream: Bool) throws -> [String: Any] {
        var system: [String] = []
        if let instructions = body["instructions"] as? String { system.append(instructions) }
        var messages: [[String: Any]] = []
        /// Appends blocks to the last message if it has this role (Messages alternates roles).
        func add(_ role: String, _ blocks: [[String: Any]]) {
            if var last = messages.last, last["role"] as? String == role, let content = last["content"] as? [[String: Any]] {
                last["content"] = content + blocks
                messages[messages.count - 1] = last
            } else {
                messages.append(["role": role, "content": blocks])
            }
        }
        for case let item as [String: Any] in items {
            switch item["type"] as? String ?? (item["role"] != nil ? "message" : "") {
            case "message":
                let role = item["role"] as? String ?? "user"
                let blocks = textBlocks(item["content"])
                if role == "system" || role == "developer" {
                    system += blocks.compactMap { $0["text"] as? String }
                } else if !blocks.isEmpty {
                    add(role == "assistant" ? "assistant" : "user", blocks)
                }
            case "function_call":
                let arguments = (item["arguments"] as? String).flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } ?? [String: Any]()
                add("assistant", [["type": "tool_use", "id": item["call_id"] ?? "", "name": item["name"] ?? "", "input": arguments]])
            case "function_call_output":
                let output = item["output"] as? String ?? String(decoding: (try? JSONSerialization.data(withJSONObject: item["output"] ?? "")) ?? Data(), as: UTF8.self)
                add("user", [["type": "tool_result", "tool_use_id": item["call_id"] ?? "", "content": output]])
            case "reasoning":
                continue
            default:
                throw GatewayError.invalidRequest("input items of type \((item["type"] as? String).map { String($0.prefix(64)) } ?? "?") cannot be sent to an Anthropic upstream",
                                                  code: "unsupported_item")
            }
        }
        var request: [String: Any] = ["model": body["model"] ?? "", "messages": messages, "max_tokens": body["max_output_tokens"] ?? 4096]
        if !system.isEmpty { request["system"] = system.joined(separator: "\n\n") }
        if stream { request["stream"] = true }
        for key in ["temperature", "top_p"] where body[key] != nil { request[key] = body[key] }
        if let tools = body["tools"] as? [[String: Any]] {
            request["tools"] = try tools.map { tool -> [String: Any] in
                guard tool["type"] as? String == "function" else {
                    throw GatewayError.invalidRequest("only function tools can be sent to an Anthropic upstream", code: "unsupported_tool")
                }
                var t: [String: Any] = ["name": tool["name"] ?? "", "input_schema": tool["parameters"] ?? ["type": "object"]]
                if let d = tool["description"] { t["description"] = d }
                return t
            }
        }
        switch body["tool_choice"] {
        case let name as [String: Any]: request["tool_choice"] = ["type": "tool", "name": name["name"] ?? ""]
        case "required" as String: request["tool_choice"] = ["type": "any"]
        case "none" as String: request["tool_choice"] = ["type": "none"]
        case "auto" as String: request["tool_choice"] = ["type": "auto"]
        default: break
        }
        return request
    }

    private static func textBlocks(_ content: Any?) -> [[String: Any]] {
        if let text = content as? String { return text.isEmpty ? [] : [["type": "text", "text": text]] }
        return (content as? [[String: Any]] ?? []).compactMap { part in
            ["input_text", "output_text", "text"].contains(part["type"] as? String ?? "") ? ["type": "text", "text": part["text"] ?? ""] : nil
        }
    }

    /// The Responses object for a Messages answer.
    static func response(fromMessage message: [String: Any], request: [String: Any]) -> [String: Any] {
        var output: [[String: Any]] = []
        var text = ""
        var calls: [[String: Any]] = []
        for case let block as [String: Any] in message["content"] as? [Any] ?? [] {
            switch block["type"] as? String {
            case "text": text += block["text"] as? String ?? ""
            case "tool_use":
                let arguments = (try? JSONSerialization.data(withJSONObject: block["input"] ?? [String: Any]())).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
                calls.append(ChatTranslation.functionCallItem(callID: block["id"] as? String ?? "", name: block["name"] as? String ?? "", arguments: arguments))
            default: continue
            }
        }
        if !text.isEmpty { output.append(ChatTranslation.messageItem(text)) }
        output += calls
        let usage = message["usage"] as? [String: Any]
        return ChatTranslation.responseObject(request: request, output: output, status: "completed",
                                              usage: (usage?["input_tokens"] as? Int, usage?["output_tokens"] as? Int))
    }

    /// The events one event of a Messages stream makes.
    static func feed(_ event: [String: Any], into stream: inout ResponseStreamAssembler) -> [[String: Any]] {
        var out = stream.start()
        switch event["type"] as? String {
        case "message_start":
            let usage = (event["message"] as? [String: Any])?["usage"] as? [String: Any]
            stream.usage(input: usage?["input_tokens"] as? Int, output: nil)
        case "content_block_start":
            if let block = event["content_block"] as? [String: Any], block["type"] as? String == "tool_use" {
                stream.toolCall(index: event["index"] as? Int ?? 0, id: block["id"] as? String, name: block["name"] as? String, arguments: nil)
            }
        case "content_block_delta":
            let delta = event["delta"] as? [String: Any] ?? [:]
            if let piece = delta["text"] as? String { out += stream.text(piece) }
            if let partial = delta["partial_json"] as? String {
                stream.toolCall(index: event["index"] as? Int ?? 0, id: nil, name: nil, arguments: partial)
            }
        case "message_delta":
            stream.usage(input: nil, output: (event["usage"] as? [String: Any])?["output_tokens"] as? Int)
        default: break
        }
        return out
    }
}
