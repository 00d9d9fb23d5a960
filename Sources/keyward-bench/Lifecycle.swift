import Foundation
import KeywardAudit
import KeywardCrypto
import KeywardGateway
import KeywardKeyStores
import KeywardServer
import KeywardStorage
import Logging

/// A gateway on a fresh data folder with tenant `name` on a new local key, nothing served.
func benchGateway(_ folder: String, cache: CacheLimits = CacheLimits(maxAge: 60, maxMessages: 100_000)) async throws -> Gateway {
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    // The environment's database (KEYWARD_DATABASE_URL, KEYWARD_ROOT_KEY_FILE), if any, as `serve` reads it.
    var configuration = try GatewayConfiguration.load(dataFolder: folder, listen: nil, configFile: nil)
    configuration.cacheLimits = cache
    let gateway = try Gateway(configuration: configuration, logger: logger)
    // The storage's services (a database's pool) run for the rest of this short-lived process.
    for service in gateway.storageServices { Task { try? await service.run() } }
    _ = try await gateway.prepare()
    // With PostgreSQL, data keys are cached only while the change feed listens.
    Task { await gateway.followChanges() }
    for _ in 0..<500 where !gateway.cachesAreTrusted { try await Task.sleep(for: .milliseconds(10)) }
    return gateway
}

/// Stores `exchanges` chat exchanges (two records each, as the gateway stores them: sealed under
/// the tenant's cached data key, inserted with their audit event) for tenant `name`.
func seed(_ gateway: Gateway, tenant name: String, exchanges: Int) async throws {
    var tenant = try await gateway.store.tenant(named: name)
    if tenant == nil {
        let store = try gateway.keyStores.store(for: KeyReference(scheme: "local", keyID: name))
        if (try? await store.describe(keyID: name)) == nil { _ = try await store.createKey(name: name) }
        tenant = Tenant(name: name, key: "local:\(name)", createdAt: Int64(Date().timeIntervalSince1970 * 1000))
        try await gateway.store.createTenant(tenant!)
    }
    let request = Array(#"{"model":"keyward/echo","messages":[{"role":"user","content":"hello there, a seeded prompt"}]}"#.utf8)
    let response = Array(#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"echo: hello there, a seeded prompt"},"finish_reason":"stop"}]}"#.utf8)
    var batch: [Record] = []
    for i in 0..<exchanges {
        let sealer = try await gateway.vault.sealer(for: tenant!, plaintextLength: request.count)
        let id = "chatcmpl-seed\(String(i, radix: 36))-\(UUID().uuidString.prefix(8))"
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        batch.append(try sealer.seal(request, id: id, kind: "chat.request", createdAt: now, metadata: RecordMetadata(model: "keyward/echo")))
        batch.append(try sealer.seal(response, id: id, kind: "chat.response", createdAt: now, metadata: RecordMetadata(model: "keyward/echo")))
        if batch.count >= 1000 || i == exchanges - 1 {
            let events = stride(from: 0, to: batch.count, by: 2).map {
                AuditEvent(time: now, actor: "seed", tenant: name, key: tenant!.key, operation: .encryptRecord, record: batch[$0].id)
            }
            try await gateway.store.insert(batch, audit: events)
            batch.removeAll(keepingCapacity: true)
        }
    }
}

/// Audit append latency, one event per transaction as the retrieval path appends them, from one
/// task and then from 16 at once (group commit).
func auditAppend(_ n: Int) async throws {
    let folder = NSTemporaryDirectory() + "keyward-bench-audit-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let store = try SQLiteRecordStore(path: folder + ".sqlite3")
    defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: folder + ".sqlite3" + s) } }
    try await store.migrate()
    func event(_ i: Int) -> AuditEvent {
        AuditEvent(time: Int64(Date().timeIntervalSince1970 * 1000), actor: "tok_0VboW6EOy27gZNRCPSQftsaD", tenant: "acme",
                   key: "local:acme", operation: .decryptRecord, purpose: "retrieval", requestID: "req-\(i)",
                   record: "chatcmpl-0VboW6EOy27gZNRCPSQf\(i)/chat.response")
    }
    for i in 0..<1000 { try await store.appendAudit([event(i)]) }
    // The gateway's maintenance service, as it runs beside the appends: a checkpoint every 250 ms.
    let upkeep = Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            _ = try? await store.maintain()
        }
    }
    defer { upkeep.cancel() }
    let clock = ContinuousClock()
    var samples: [Double] = []
    samples.reserveCapacity(n)
    let cpu = HostCPUTime.now()
    for i in 0..<n {
        let e = event(i)  // the caller's work: the append is timed from here
        let t = clock.now
        try await store.appendAudit([e])
        samples.append(seconds(clock.now - t) * 1e6)
    }
    report("audit-append (1 task)", samples)
    print("  host steal meanwhile: \(HostCPUTime.stolen(since: cpu)) of the machine's CPU time")

    var concurrent: [Double] = []
    let perTask = n / 16
    let started = clock.now
    try await withThrowingTaskGroup(of: [Double].self) { group in
        for t in 0..<16 {
            group.addTask {
                var s: [Double] = []
                for i in 0..<perTask {
                    let e = event(t * perTask + i)
                    let start = clock.now
                    try await store.appendAudit([e])
                    s.append(seconds(clock.now - start) * 1e6)
                }
                return s
            }
        }
        for try await s in group { concurrent += s }
    }
    let elapsed = seconds(clock.now - started)
    report("audit-append (16 tasks)", concurrent)
    print(String(format: "  16 tasks: %.0f appends/s, %.1f µs of wall time per append (the p99 above is mostly waiting for the group commit ahead)",
                 Double(concurrent.count) / elapsed, elapsed / Double(concurrent.count) * 1e6))
    // The chain those appends made must verify.
    let result = try await AuditVerifier.verify(store, trustedKeys: [])
    print("  chain verified: \(result.events) events")
}

private func report(_ name: String, _ samples: [Double]) {
    let sorted = samples.sorted()
    func q(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
    print(String(format: "%@: %d appends: p50 %.1f µs, p99 %.1f µs, p99.9 %.1f µs, max %.1f µs (target p99 ≤ 50)",
                 name, samples.count, q(0.5), q(0.99), q(0.999), sorted.last ?? 0))
}

/// Re-key throughput: `n` records of one tenant from one local key to another.
func rewrap(_ n: Int) async throws {
    let folder = NSTemporaryDirectory() + "keyward-bench-rewrap-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let gateway = try await benchGateway(folder)
    try await seed(gateway, tenant: "acme", exchanges: n / 2)
    _ = try await gateway.keyStores.store(for: KeyReference(scheme: "local", keyID: "")).createKey(name: "acme-new")
    let job = try await gateway.startRekey(tenant: "acme", to: "local:acme-new", actor: "bench")
    let clock = ContinuousClock(), cpu0 = cpuSeconds()
    var done: Job?
    let elapsed = try await clock.measure { done = try await gateway.runJob(id: job.id) }
    let cpu = cpuSeconds() - cpu0
    guard let done, done.status == .done else { throw GatewayError.internalError }
    print(String(format: "rewrap: %lld records (%lld data keys) from local:acme to local:acme-new in %.2f s: %.0f records/s (target ≥ 20,000); %.0f%% of one core",
                 done.processed, done.dataKeys, seconds(elapsed), Double(done.processed) / seconds(elapsed), cpu / seconds(elapsed) * 100))
    try await gateway.upstreams.shutdown()
}

/// What storing one chat exchange costs, one exchange at a time (the 4-connection case, where no
/// commit is shared): the data key from the cache, two records sealed, and their insert with the
/// audit event, each timed on its own; the checkpoint runs beside it as in the gateway.
func storeExchange(_ n: Int) async throws {
    let folder = NSTemporaryDirectory() + "keyward-bench-exchange-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let gateway = try await benchGateway(folder)
    try await seed(gateway, tenant: "acme", exchanges: 1)
    guard let tenant = try await gateway.store.tenant(named: "acme") else { throw GatewayError.internalError }
    let request = Array(#"{"model":"mock","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say something about foxes and dogs, briefly."}],"temperature":0.2}"#.utf8)
    let response = Array(#"{"id":"chatcmpl-0VcaXXXXXXXXXXXXXXXXXXXXXXXXXX","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}"#.utf8)
    let upkeep = Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            _ = try? await gateway.store.maintain()
        }
    }
    defer { upkeep.cancel() }
    let clock = ContinuousClock()
    do {
        let sealer = try await gateway.vault.sealer(for: tenant, plaintextLength: request.count)
        let metadata = RecordMetadata(model: "mock", status: 200, promptTokens: 12, completionTokens: 10, upstreamMs: 0.5)
        let c0 = cpuSeconds()
        for i in 0..<20_000 { _ = try sealer.seal(response, id: "chatcmpl-\(i)", kind: "chat.response", createdAt: 1, metadata: metadata) }
        print(String(format: "  seal alone: %.1f µs of CPU per record", (cpuSeconds() - c0) / 20_000 * 1e6))
    }
    var keyTimes: [Double] = [], sealTimes: [Double] = [], insertTimes: [Double] = []
    let cpu0 = cpuSeconds(), started = clock.now
    for i in 0..<n {
        let t0 = clock.now
        let sealer = try await gateway.vault.sealer(for: tenant, plaintextLength: request.count)
        let t1 = clock.now
        let id = "chatcmpl-bench\(String(i, radix: 36))"
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let metadata = RecordMetadata(model: "mock", status: 200, promptTokens: 12, completionTokens: 10, upstreamMs: 0.5)
        let records = [
            try sealer.seal(request, id: id, kind: "chat.request", createdAt: now, metadata: metadata),
            try sealer.seal(response, id: id, kind: "chat.response", createdAt: now, metadata: metadata),
        ]
        let t2 = clock.now
        try await gateway.store.insert(records, audit: [
            AuditEvent(time: now, actor: "tok_0VboW6EOy27gZNRCPSQftsaD", tenant: "acme", key: tenant.key, operation: .encryptRecord,
                       purpose: "inference", requestID: "dfd17e00d2b362817a51dc87c26c20fa", record: id, detail: "model=mock"),
        ])
        let t3 = clock.now
        keyTimes.append(seconds(t1 - t0) * 1e6)
        sealTimes.append(seconds(t2 - t1) * 1e6)
        insertTimes.append(seconds(t3 - t2) * 1e6)
    }
    let wall = seconds(clock.now - started), cpu = cpuSeconds() - cpu0
    // The same exchanges 4 to a commit (the most 4 connections can bring to one) and 32 to a
    // commit, as the group commit takes them under load.
    let sealer = try await gateway.vault.sealer(for: tenant, plaintextLength: request.count)
    let metadata = RecordMetadata(model: "mock", status: 200, promptTokens: 12, completionTokens: 10, upstreamMs: 0.5)
    for group in [4, 32] {
        var insertCPU = 0.0
        for b in 0..<(n / group) {
            var records: [Record] = [], events: [AuditEvent] = []
            for j in 0..<group {
                let id = "chatcmpl-batch\(group)-\(String(b * group + j, radix: 36))"
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                records.append(try sealer.seal(request, id: id, kind: "chat.request", createdAt: now, metadata: metadata))
                records.append(try sealer.seal(response, id: id, kind: "chat.response", createdAt: now, metadata: metadata))
                events.append(AuditEvent(time: now, actor: "tok_0VboW6EOy27gZNRCPSQftsaD", tenant: "acme", key: tenant.key, operation: .encryptRecord,
                                         purpose: "inference", requestID: "dfd17e00d2b362817a51dc87c26c20fa", record: id, detail: "model=mock"))
            }
            let c0 = cpuSeconds()
            try await gateway.store.insert(records, audit: events)
            insertCPU += cpuSeconds() - c0
        }
        print(String(format: "  %d exchanges per commit: %.1f µs of CPU per exchange to insert", group, insertCPU / Double(n / group * group) * 1e6))
    }
    func line(_ name: String, _ s: [Double]) {
        let sorted = s.sorted()
        func q(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        print(String(format: "  %-22@ mean %6.1f µs  p50 %6.1f  p99 %7.1f  max %8.1f", name, s.reduce(0, +) / Double(s.count), q(0.5), q(0.99), sorted.last ?? 0))
    }
    print(String(format: "store-exchange: %d exchanges one at a time: %.1f µs wall and %.1f µs CPU (all threads, checkpoints included) each",
                 n, wall / Double(n) * 1e6, cpu / Double(n) * 1e6))
    line("data key (cached)", keyTimes)
    line("seal two records", sealTimes)
    line("insert with its event", insertTimes)
    try await gateway.upstreams.shutdown()
}

/// What opening a stored record costs, as a Responses turn opens the 98 records of a 50-turn
/// context (cached data key; one turn's input and answer): CPU per record, N contexts.
func openRecords(_ n: Int) async throws {
    let folder = NSTemporaryDirectory() + "keyward-bench-open-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let gateway = try await benchGateway(folder)
    try await seed(gateway, tenant: "acme", exchanges: 1)
    guard let tenant = try await gateway.store.tenant(named: "acme") else { throw GatewayError.internalError }
    let input = Array(#"[{"role":"user","content":"turn 7: Summarise the state of the deployment and list what changed since the previous turn. Summarise the state of the deployment and list what changed since the previous turn. "}]"#.utf8)
    let answer = Array(#"{"id":"resp_0VcaXXXXXXXXXXXXXXXXXXXXXXXX","object":"response","created_at":1,"status":"completed","model":"resp-1","output":[{"type":"message","id":"msg_up3","status":"completed","role":"assistant","content":[{"type":"output_text","text":"echo: turn 7: Summarise the state of the deployment and list what changed since the previous turn.","annotations":[]}]}],"parallel_tool_calls":true,"tool_choice":"auto","tools":[],"store":false,"usage":{"input_tokens":9,"output_tokens":5,"total_tokens":14}}"#.utf8)
    let sealer = try await gateway.vault.sealer(for: tenant, plaintextLength: answer.count)
    var records: [Record] = []
    for t in 0..<49 {
        let id = "resp_bench\(t)"
        records.append(try sealer.seal(input, id: id, kind: "response.input", createdAt: 1, metadata: RecordMetadata(model: "resp-1")))
        records.append(try sealer.seal(answer, id: id, kind: "response", createdAt: 1, metadata: RecordMetadata(model: "resp-1")))
    }
    _ = try await gateway.vault.open(records, of: tenant)
    let clock = ContinuousClock(), cpu0 = cpuSeconds()
    let elapsed = try await clock.measure {
        for _ in 0..<n { _ = try await gateway.vault.open(records, of: tenant) }
    }
    let cpu = cpuSeconds() - cpu0, opened = Double(n * records.count)
    print(String(format: "open-records: %d contexts of %d records: %.2f µs wall, %.2f µs CPU per record", n, records.count,
                 seconds(elapsed) / opened * 1e6, cpu / opened * 1e6))
    try await gateway.upstreams.shutdown()
}
