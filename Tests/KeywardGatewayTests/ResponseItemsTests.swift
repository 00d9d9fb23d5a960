import Foundation
@testable import KeywardGateway
import KeywardTesting
import Testing

@Suite("Responses: items, context and the upstream request")
struct ResponseItemsTests {
    @Test func inputIsAListOfItems() throws {
        let one = try ResponseItems.input("hi")
        #expect(one.count == 1 && (one[0] as? [String: Any])?["content"] as? String == "hi")
        #expect(try ResponseItems.input([["type": "function_call_output", "call_id": "c", "output": "x"]]).count == 1)
        for bad: Any? in [nil, 3, ["not an object"]] {
            #expect(throws: GatewayError.self) { try ResponseItems.input(bad) }
        }
    }

    @Test func theContextIsEveryEarlierTurnsInputThenOutput() throws {
        let turns = [
            ResponseItems.Turn(input: Array(#"[{"n":"a"}]"#.utf8), response: Array(#"{"id":"r","output":[{"n":"A"},{"n":"A2"}],"x":[9]}"#.utf8)),
            ResponseItems.Turn(input: Array(#" [ {"n":"b"} ] "#.utf8), response: Array(#"{"output":[]}"#.utf8)),
            ResponseItems.Turn(input: Array("[]".utf8), response: Array(#"{"output":[{"n":"C"}]}"#.utf8)),
        ]
        let body = try ResponseItems.upstreamBody(["model": "m", "previous_response_id": "resp_1"],
                                                  input: ResponseItems.context(turns) + [Array(#"{"n":"d"}"#.utf8)[...]], storing: false)
        let sent = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        #expect((sent["input"] as? [[String: String]])?.map { $0["n"]! } == ["a", "A", "A2", "b", "C", "d"])
        #expect(sent["model"] as? String == "m" && sent["store"] as? Bool == false && sent["previous_response_id"] == nil)
        #expect(ResponseItems.arrayContents(Array("{}".utf8)[...]) == nil)
        // A request with nothing but input.
        let bare = try ResponseItems.upstreamBody([:], input: [], storing: false)
        #expect(try JSONSerialization.jsonObject(with: Data(bare)) as? [String: Any] != nil)
    }

    @Test func theUpstreamKeepsNothingAndLooksNothingUp() {
        let body: [String: Any] = ["model": "m", "input": "x", "previous_response_id": "resp_1", "conversation": "conv_1",
                                   "store": true, "include": ["file_search_call.results"], "tools": [["type": "function"]]]
        let sent = ResponseItems.upstreamRequest(body, storing: true)
        #expect(sent["store"] as? Bool == false)
        #expect(sent["previous_response_id"] == nil && sent["conversation"] == nil)
        #expect(sent["include"] as? [String] == ["file_search_call.results", "reasoning.encrypted_content"])
        #expect((sent["tools"] as? [Any])?.count == 1)
        // Not stored: nothing to replay, so nothing more is asked for.
        #expect(ResponseItems.upstreamRequest(["model": "m"], storing: false)["include"] == nil)
    }

    @Test func aResponseCarriesKeywardsIdAndChain() {
        let r = ResponseItems.patched(["id": "resp_up", "output": []], id: "resp_kw", previous: nil, stored: false)
        #expect(r["id"] as? String == "resp_kw" && r["previous_response_id"] is NSNull && r["store"] as? Bool == false)
        #expect(ResponseItems.patched([:], id: "a", previous: "resp_0", stored: true)["previous_response_id"] as? String == "resp_0")
    }

    @Test func inputItemsAreListedWithIdsAndContentParts() {
        let listed = ResponseItems.listed([["role": "user", "content": "hi"], ["role": "assistant", "content": "yo"],
                                           ["type": "function_call_output", "id": "fco_1", "call_id": "c", "output": "x"]],
                                          responseID: "resp_9")
        #expect(listed.map { $0["id"] as? String } == ["resp_9_in0", "resp_9_in1", "fco_1"])
        #expect(listed[0]["type"] as? String == "message")
        #expect((listed[0]["content"] as? [[String: Any]])?.first?["type"] as? String == "input_text")
        #expect((listed[1]["content"] as? [[String: Any]])?.first?["type"] as? String == "output_text")
        #expect(listed[2]["output"] as? String == "x")
    }

    @Test func aResponsesRequestBecomesAChatRequest() throws {
        let items: [Any] = [
            ["role": "user", "content": "q"],
            ["type": "reasoning", "id": "rs_1", "encrypted_content": "x"],
            ["type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"],
            ["type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"a\":1}"],
            ["type": "function_call_output", "call_id": "c1", "output": "one"],
            ["type": "message", "role": "assistant", "content": [["type": "output_text", "text": "done"]]],
        ]
        let chat = try ChatTranslation.chatRequest(["model": "m", "instructions": "be brief", "max_output_tokens": 9,
                                                    "tools": [["type": "function", "name": "f", "parameters": ["type": "object"]]],
                                                    "tool_choice": ["type": "function", "name": "f"]], items: items, stream: true)
        let messages = try #require(chat["messages"] as? [[String: Any]])
        #expect(messages.map { $0["role"] as? String } == ["system", "user", "assistant", "tool", "assistant"])
        // Calls made together are one assistant message; reasoning has no chat form.
        #expect((messages[2]["tool_calls"] as? [[String: Any]])?.map { $0["id"] as? String } == ["c1", "c2"])
        #expect(messages[3]["tool_call_id"] as? String == "c1" && messages[4]["content"] as? String == "done")
        #expect(chat["max_tokens"] as? Int == 9 && chat["stream"] as? Bool == true)
        #expect(((chat["tools"] as? [[String: Any]])?.first?["function"] as? [String: Any])?["name"] as? String == "f")
        #expect(((chat["tool_choice"] as? [String: Any])?["function"] as? [String: Any])?["name"] as? String == "f")
        #expect(throws: GatewayError.self) { try ChatTranslation.chatRequest([:], items: [["type": "web_search_call"]], stream: false) }
        #expect(throws: GatewayError.self) { try ChatTranslation.chatRequest(["tools": [["type": "web_search"]]], items: [], stream: false) }
    }

    @Test func aChatStreamBecomesResponsesEvents() {
        var t = ResponseStreamAssembler(request: ["model": "m"])
        var events: [[String: Any]] = []
        for chunk: [String: Any] in [
            ["choices": [["delta": ["role": "assistant", "content": ""]]]],
            ["choices": [["delta": ["content": "hel"]]]],
            ["choices": [["delta": ["content": "lo"]]]],
            ["choices": [["delta": ["tool_calls": [["index": 0, "id": "c", "function": ["name": "f", "arguments": "{\"a\""]]]]]]],
            ["choices": [["delta": ["tool_calls": [["index": 0, "function": ["arguments": ":1}"]]]]]]],
            ["choices": [], "usage": ["prompt_tokens": 3, "completion_tokens": 2]],
        ] { events += ChatTranslation.feed(chunk, into: &t) }
        let (closing, response) = t.finish()
        events += closing
        #expect(events.map { $0["type"] as? String ?? "" } == [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.output_item.added", "response.output_item.done", "response.completed",
        ])
        #expect(events.map { $0["sequence_number"] as? Int } == Array(0..<events.count))
        let output = response["output"] as? [[String: Any]] ?? []
        #expect(((output.first?["content"] as? [[String: Any]])?.first?["text"] as? String) == "hello")
        #expect(output.last?["arguments"] as? String == "{\"a\":1}" && output.last?["call_id"] as? String == "c")
        #expect((response["usage"] as? [String: Any])?["total_tokens"] as? Int == 5)
    }

    @Test func aResponsesRequestBecomesAMessagesRequestAndItsStreamEvents() throws {
        let items: [Any] = [
            ["role": "developer", "content": "rules"], ["role": "user", "content": "q"],
            ["type": "function_call", "call_id": "t1", "name": "f", "arguments": "{\"a\":1}"],
            ["type": "function_call_output", "call_id": "t1", "output": "one"],
            ["role": "user", "content": [["type": "input_text", "text": "more"]]],
        ]
        let request = try MessagesTranslation.messagesRequest(["model": "c", "instructions": "brief", "tool_choice": "required"], items: items, stream: false)
        #expect(request["system"] as? String == "brief\n\nrules" && request["max_tokens"] as? Int == 4096)
        let messages = try #require(request["messages"] as? [[String: Any]])
        // Roles alternate: the tool result and the next user text are one user message.
        #expect(messages.map { $0["role"] as? String } == ["user", "assistant", "user"])
        #expect((messages[2]["content"] as? [[String: Any]])?.map { $0["type"] as? String } == ["tool_result", "text"])
        #expect(((messages[1]["content"] as? [[String: Any]])?.first?["input"] as? [String: Int]) == ["a": 1])
        #expect((request["tool_choice"] as? [String: String]) == ["type": "any"])

        var stream = ResponseStreamAssembler(request: ["model": "c"])
        var events: [[String: Any]] = []
        for e: [String: Any] in [
            ["type": "message_start", "message": ["usage": ["input_tokens": 4]]],
            ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]],
            ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": "hi"]],
            ["type": "content_block_start", "index": 1, "content_block": ["type": "tool_use", "id": "t2", "name": "g"]],
            ["type": "content_block_delta", "index": 1, "delta": ["type": "input_json_delta", "partial_json": "{}"]],
            ["type": "message_delta", "usage": ["output_tokens": 3]],
            ["type": "message_stop"],
        ] { events += MessagesTranslation.feed(e, into: &stream) }
        let (closing, response) = stream.finish()
        #expect((events + closing).last?["type"] as? String == "response.completed")
        let output = response["output"] as? [[String: Any]] ?? []
        #expect(output.map { $0["type"] as? String } == ["message", "function_call"])
        #expect(output.last?["call_id"] as? String == "t2" && output.last?["arguments"] as? String == "{}")
        #expect((response["usage"] as? [String: Any])?["total_tokens"] as? Int == 7)
    }
}
