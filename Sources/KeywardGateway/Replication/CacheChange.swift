/// What another replica may hold in a cache, named in a change notification.
enum CacheChange: Sendable, Equatable {
    case key(String), policy(String), tenant(String), providerKeys(String), job(String)
    case tokens
    /// Everything (after notifications were lost).
    case all

    var payload: String {
        switch self {
        case .key(let v): "key \(v)"
        case .policy(let v): "policy \(v)"
        case .tenant(let v): "tenant \(v)"
        case .providerKeys(let v): "provider-keys \(v)"
        case .job(let v): "job \(v)"
        case .tokens: "tokens"
        case .all: "all"
        }
    }

    init?(payload: String) {
        let parts = payload.split(separator: " ", maxSplits: 1).map(String.init)
        switch (parts.first, parts.count) {
        case ("key", 2): self = .key(parts[1])
        case ("policy", 2): self = .policy(parts[1])
        case ("tenant", 2): self = .tenant(parts[1])
        case ("provider-keys", 2): self = .providerKeys(parts[1])
        case ("job", 2): self = .job(parts[1])
        case ("tokens", 1): self = .tokens
        case ("all", 1): self = .all
        default: return nil
        }
    }
}
