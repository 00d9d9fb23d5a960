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

    @Test func theContextIsEveryEarlierTurnThenTheNewInput() {
        let turns = [ResponseItems.Turn(input: ["a"], output: ["A", "A2"]), ResponseItems.Turn(input: ["b"], output: [])]
        #expect(ResponseItems.context(turns, then: ["c"]).compactMap { $0 as? String } == ["a", "A", "A2", "b", "c"])
    }

    @Test func theUpstreamKeepsNothingAndLooksNothingUp() {
        let body: [String: Any] = ["model": "m", "input": "x", "previous_response_id": "resp_1", "conversation": "conv_1",
                                   "store": true, "include": ["file_search_call.results"], "tools": [["type": "function"]]]
        let sent = ResponseItems.upstreamRequest(body, context: ["ctx"], storing: true)
        #expect(sent["store"] as? Bool == false)
        #expect(sent["previous_response_id"] == nil && sent["conversation"] == nil)
        #expect(sent["include"] as? [String] == ["file_search_call.results", "reasoning.encrypted_content"])
        #expect((sent["input"] as? [Any])?.count == 1 && (sent["tools"] as? [Any])?.count == 1)
        // Not stored: nothing to replay, so nothing more is asked for.
        #expect(ResponseItems.upstreamRequest(["model": "m"], context: [], storing: false)["include"] == nil)
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
}
