import KeywardErrors
import Testing

/// Expects `body` to throw an error of type `E` with `code`; records an issue otherwise.
public func expectError<E: CodedError>(_ code: E.Code, as _: E.Type = E.self, sourceLocation: SourceLocation = #_sourceLocation,
                                       _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \(code), but nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as E {
        #expect(e.code == code, "got \(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}
