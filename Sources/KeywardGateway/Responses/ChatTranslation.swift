import Foundation

/// The Responses API for upstreams that speak chat completions only (vLLM, Ollama, most
/// self-hosted servers): a Responses request as a chat request, and the chat answer (whole or
/// streamed) as Responses output items and events. Function calls map to tool calls both ways;
/// reasoning items have no chat form and are left out of the request.
enum ChatTranslation {
    /// The chat request for a Responses request whose whole input (context included) is `items`.
    static func chatRequest(_ body: [String: Any], items: [Any], stream: Bool) throws -> [String: Any] {
        var messages: [[String: Any]] = []
        if let instructions = body["instructions"] as? String { messages.append(["role": "system", "content": instructions]) }
        for case let item as [String: Any] in items {
            switch item["type"] as? String ?? (item["role"] != nil ? "message" : "") {
            case "message":
                let role = item["role"] as? String ?? "user"
                messages.append(["role": role == "developer" ? "system" : role, "content": chatContent(item["content"])])
            case "function_call":
                let call: [String: Any] = ["id": item["call_id"] ?? "", "type": "function",
                                           "function": ["name": item["name"] ?? "", "arguments": item["arguments"] ?? "{}"]]
                // Calls the model made together are one assistant message.
                if var last = messages.last, last["role"] as? String == "assistant", var calls = last["tool_calls"] as? [Any],
                   last["content"] is NSNull {
                    calls.append(call)
                    last["tool_calls"] = calls
                    messages[messages.count - 1] = last
                } else {
                    messages.append(["role": "assistant", "content": NSNull(), "tool_calls": [call]])
                }
            case "function_call_output":
                let output = item["output"] as? String ?? String(decoding: (try? JSONSerialization.data(withJSONObject: item["output"] ?? "")) ?? Data(), as: UTF8.self)
                messages.append(["role": "tool", "tool_call_id": item["call_id"] ?? "", "content": output])
            case "reasoning":
                continue
            default:
                throw GatewayError.invalidRequest("input items of type \((item["type"] as? String).map { String($0.prefix(64)) } ?? "?") cannot be sent to a chat-completions upstream",
                                                  code: "unsupported_item")
            }
        }
        var chat: [String: Any] = ["model": body["model"] ?? "", "messages": messages]
        if stream {
            chat["stream"] = true
            chat["stream_options"] = ["include_usage": true]
        }
        for key in ["temperature", "top_p", "parallel_tool_calls", "user", "metadata"] where body[key] != nil { chat[key] = body[key] }
        if let max = body["max_output_tokens"] { chat["max_tokens"] = max }
        if let tools = body["tools"] as? [[String: Any]] {
            chat["tools"] = try tools.map { tool -> [String: Any] in
                guard tool["type"] as? String == "function" else {
                    throw GatewayError.invalidRequest("only function tools can be sent to a chat-completions upstream", code: "unsupported_tool")
                }
                var function: [String: Any] = ["name": tool["name"] ?? ""]
                for key in ["description", "parameters", "strict"] where tool[key] != nil { function[key] = tool[key] }
                return ["type": "function", "function": function]
            }
        }
        if let choice = body["tool_choice"] {
            if let named = choice as? [String: Any], let name = named["name"] as? String {
                chat["tool_choice"] = ["type": "function", "function": ["name": name]]
            } else {
                chat["tool_choice"] = choice
            }
        }
        if let format = (body["text"] as? [String: Any])?["format"] as? [String: Any], let type = format["type"] as? String, type != "text" {
            if type == "json_schema" {
                var schema = format
                schema["type"] = nil
                chat["response_format"] = ["type": "json_schema", "json_schema": schema]
            } else {
                chat["response_format"] = ["type": type]
            }
        }
        return chat
    }

    /// A message's content in chat's shape: a string stays; parts become text and image parts.
    private static func chatContent(_ content: Any?) -> Any {
        guard let parts = content as? [[String: Any]] else { return content as? String ?? "" }
        if parts.allSatisfy({ ["input_text", "output_text", "text"].contains($0["type"] as? String ?? "") }) {
            return parts.map { $0["text"] as? String ?? "" }.joined()
        }
        return parts.compactMap { part -> [String: Any]? in
            switch part["type"] as? String {
            case "input_text", "output_text", "text": return ["type": "text", "text": part["text"] ?? ""]
            case "input_image":
                guard let url = part["image_url"] as? String else { return nil }
                return ["type": "image_url", "image_url": ["url": url, "detail": part["detail"] ?? "auto"]]
            default: return nil
            }
        }
    }

    /// The Responses object for a chat completion.
    static func response(fromChat chat: [String: Any], request: [String: Any]) -> [String: Any] {
        let message = ((chat["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any]) ?? [:]
        var output: [[String: Any]] = []
        if let text = message["content"] as? String, !text.isEmpty { output.append(messageItem(text)) }
        for case let call as [String: Any] in message["tool_calls"] as? [Any] ?? [] {
            let function = call["function"] as? [String: Any] ?? [:]
            output.append(functionCallItem(callID: call["id"] as? String ?? "", name: function["name"] as? String ?? "",
                                           arguments: function["arguments"] as? String ?? ""))
        }
        let usage = chat["usage"] as? [String: Any]
        return responseObject(request: request, output: output, status: "completed",
                              usage: (usage?["prompt_tokens"] as? Int, usage?["completion_tokens"] as? Int))
    }

    static func messageItem(_ text: String, status: String = "completed") -> [String: Any] {
        ["type": "message", "id": Tokens.identifier("msg_"), "status": status, "role": "assistant",
         "content": [["type": "output_text", "text": text, "annotations": [Any]()]]]
    }

    static func functionCallItem(callID: String, name: String, arguments: String) -> [String: Any] {
        ["type": "function_call", "id": Tokens.identifier("fc_"), "call_id": callID, "name": name, "arguments": arguments, "status": "completed"]
    }

    static func responseObject(request: [String: Any], output: [[String: Any]], status: String, usage: (Int?, Int?)) -> [String: Any] {
        var r: [String: Any] = [
            "id": "", "object": "response", "created_at": Int(Date().timeIntervalSince1970), "status": status,
            "model": request["model"] ?? "", "output": output, "parallel_tool_calls": request["parallel_tool_calls"] ?? true,
            "tool_choice": request["tool_choice"] ?? "auto", "tools": request["tools"] ?? [Any](), "error": NSNull(),
            "incomplete_details": NSNull(), "instructions": request["instructions"] ?? NSNull(), "metadata": request["metadata"] ?? [String: Any](),
            "text": request["text"] ?? ["format": ["type": "text"]],
        ]
        if let input = usage.0, let output = usage.1 {
            r["usage"] = ["input_tokens": input, "output_tokens": output, "total_tokens": input + output,
                          "input_tokens_details": ["cached_tokens": 0], "output_tokens_details": ["reasoning_tokens": 0]]
        }
        return r
    }

    /// The events one chunk of a chat stream makes (`choices[0].delta`'s text and tool calls, or
    /// the usage of the last chunk).
    static func feed(_ chunk: [String: Any], into stream: inout ResponseStreamAssembler) -> [[String: Any]] {
        var out = stream.start()
        if let u = chunk["usage"] as? [String: Any] { stream.usage(input: u["prompt_tokens"] as? Int, output: u["completion_tokens"] as? Int) }
        guard let delta = (chunk["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any] else { return out }
        if let piece = delta["content"] as? String { out += stream.text(piece) }
        for case let call as [String: Any] in delta["tool_calls"] as? [Any] ?? [] {
            let function = call["function"] as? [String: Any] ?? [:]
            stream.toolCall(index: call["index"] as? Int ?? 0, id: call["id"] as? String, name: function["name"] as? String,
                            arguments: function["arguments"] as? String)
        }
        return out
    }
}
