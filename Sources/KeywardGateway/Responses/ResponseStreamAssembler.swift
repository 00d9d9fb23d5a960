import Foundation

/// Builds the Responses API's event sequence from a translated stream (chat completions,
/// Anthropic Messages), in OpenAI's order: the response created, the message's text as it comes,
/// then each function call whole, then the response completed (returned by ``finish()`` too, to be
/// stored before that event is sent). Pure state: the translators feed it what each upstream
/// event says, and the caller sends the events it returns.
struct ResponseStreamAssembler {
    let request: [String: Any]
    private var sequence = 0
    private var started = false
    private var text = ""
    private var messageID: String?
    private var calls: [Int: (id: String, name: String, arguments: String)] = [:]
    private var usage: (Int?, Int?) = (nil, nil)

    init(request: [String: Any]) { self.request = request }

    private mutating func event(_ type: String, _ fields: [String: Any]) -> [String: Any] {
        defer { sequence += 1 }
        return fields.merging(["type": type, "sequence_number": sequence]) { a, _ in a }
    }

    /// `response.created` and `response.in_progress`, the first time only.
    mutating func start() -> [[String: Any]] {
        guard !started else { return [] }
        started = true
        let begun = ChatTranslation.responseObject(request: request, output: [], status: "in_progress", usage: (nil, nil))
        return [event("response.created", ["response": begun]), event("response.in_progress", ["response": begun])]
    }

    /// A piece of the message's text (the message and its part are opened by the first).
    mutating func text(_ piece: String) -> [[String: Any]] {
        guard !piece.isEmpty else { return [] }
        var out = start()
        if messageID == nil {
            let item = ChatTranslation.messageItem("", status: "in_progress")
            messageID = item["id"] as? String
            out.append(event("response.output_item.added", ["output_index": 0, "item": item.merging(["content": [Any]()]) { _, b in b }]))
            out.append(event("response.content_part.added", ["output_index": 0, "item_id": messageID!, "content_index": 0,
                                                             "part": ["type": "output_text", "text": "", "annotations": [Any]()]]))
        }
        text += piece
        out.append(event("response.output_text.delta", ["output_index": 0, "item_id": messageID!, "content_index": 0, "delta": piece,
                                                        "logprobs": [Any]()]))
        return out
    }

    /// What a stream says of its `index`th tool call: its id and name once, its arguments in pieces.
    mutating func toolCall(index: Int, id: String?, name: String?, arguments: String?) {
        var c = calls[index] ?? (id: "", name: "", arguments: "")
        if let id { c.id = id }
        if let name { c.name += name }
        if let arguments { c.arguments += arguments }
        calls[index] = c
    }

    /// Token counts, as the stream gives them (either may come alone).
    mutating func usage(input: Int?, output: Int?) {
        usage = (input ?? usage.0, output ?? usage.1)
    }

    /// The closing events: the message done, each function call, and `response.completed` with
    /// the whole response.
    mutating func finish() -> (events: [[String: Any]], response: [String: Any]) {
        var out = start()
        var output: [[String: Any]] = []
        if let messageID {
            var item = ChatTranslation.messageItem(text)
            item["id"] = messageID
            let part: [String: Any] = ["type": "output_text", "text": text, "annotations": [Any]()]
            out.append(event("response.output_text.done", ["output_index": 0, "item_id": messageID, "content_index": 0, "text": text,
                                                           "logprobs": [Any]()]))
            out.append(event("response.content_part.done", ["output_index": 0, "item_id": messageID, "content_index": 0, "part": part]))
            out.append(event("response.output_item.done", ["output_index": 0, "item": item]))
            output.append(item)
        }
        for index in calls.keys.sorted() {
            let c = calls[index]!
            let item = ChatTranslation.functionCallItem(callID: c.id, name: c.name, arguments: c.arguments)
            out.append(event("response.output_item.added", ["output_index": output.count, "item": item]))
            out.append(event("response.output_item.done", ["output_index": output.count, "item": item]))
            output.append(item)
        }
        let response = ChatTranslation.responseObject(request: request, output: output, status: "completed", usage: usage)
        out.append(event("response.completed", ["response": response]))
        return (out, response)
    }
}
