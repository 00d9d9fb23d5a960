import Logging

/// Another library's diagnostics, as lines without their metadata or error: swift-otel, for one,
/// logs a request's whole header block (bearer token included) as metadata when its
/// `traceparent` does not parse. The message alone says what happened.
public struct MessageOnlyLogHandler: LogHandler {
    private var line: LineLogHandler

    public init(label: String, level: Logger.Level = .info) {
        line = LineLogHandler(label: label, level: level)
    }

    public var logLevel: Logger.Level {
        get { line.logLevel }
        set { line.logLevel = newValue }
    }

    /// Always empty: metadata given to this handler is dropped.
    public var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    public func log(event: LogEvent) {
        var event = event
        event.metadata = nil
        event.error = nil
        line.log(event: event)
    }
}
