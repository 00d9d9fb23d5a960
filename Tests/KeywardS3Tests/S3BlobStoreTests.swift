import KeywardBlockingIO
import Foundation
import KeywardKeyStores
@testable import KeywardS3
import KeywardStorage
import KeywardTesting
import Testing

/// The S3 blob store against a moto server (the real S3 API implementation here): a blob appears
/// only when committed, large ones go as multipart uploads, reads stream, and the sweep lists old
/// blobs and aborts abandoned uploads.
@Suite(.serialized) final class S3BlobStoreTests {
    let moto: MotoPeer
    let blobs: S3BlobStore

    init() async throws {
        moto = try await BlockingIO.run { try MotoPeer() }
        blobs = try S3BlobStore(configuration: .init(bucket: "keyward-blobs", prefix: "kw/", region: "us-east-1", endpoint: moto.url,
                                                     partSize: 5 << 20),
                                credentials: AWSCredentials(accessKeyID: "testing", secretAccessKey: "testing"))
        _ = try await blobs.call.send("PUT", blobs.base, operation: "CreateBucket")
    }

    func readAll(_ key: String) async throws -> [UInt8] {
        let d = try await blobs.download(key)
        defer { d.close() }
        var out: [UInt8] = []
        while let chunk = try await d.next(limit: 100_000) {
            #expect(chunk.count <= 100_000)
            out += chunk
        }
        #expect(d.size == out.count)
        return out
    }

    /// Uploads still under way (not completed nor aborted).
    func openUploads() async throws -> [String] {
        let (_, xml) = try await blobs.call.send("GET", blobs.bucketURL("uploads"), operation: "ListMultipartUploads")
        return S3XML.elements("Upload", in: xml).compactMap { S3XML.value("Key", in: $0) }
    }

    @Test func aSmallBlobIsOnePutVisibleOnlyOnceCommitted() async throws {
        let up = try await blobs.upload("files/t/small")
        try await up.write([1, 2, 3])
        try await up.write(Array(repeating: 9, count: 1000))
        await #expect(throws: StorageError.self) { _ = try await self.blobs.download("files/t/small") }
        #expect(try await openUploads().isEmpty)  // one PutObject at commit, no multipart upload
        try await up.commit()
        #expect(try await readAll("files/t/small") == [1, 2, 3] + Array(repeating: 9, count: 1000))
        try await blobs.delete("files/t/small")
        try await blobs.delete("files/t/small")  // gone already: not an error
        await #expect(throws: StorageError.self) { _ = try await self.blobs.download("files/t/small") }
    }

    @Test func aLargeBlobGoesInPartsAndReadsBackWhole() async throws {
        var rng = SplitMix(seed: 3)
        let data = rng.bytes(12 << 20)  // three parts of 5 MiB, the last shorter
        let up = try await blobs.upload("files/t/large")
        for start in stride(from: 0, to: data.count, by: 1 << 20) { try await up.write(Array(data[start..<min(start + (1 << 20), data.count)])) }
        #expect(try await openUploads() == ["kw/files/t/large"])
        try await up.commit()
        #expect(try await openUploads().isEmpty)
        #expect(try await readAll("files/t/large") == data)
    }

    @Test func anAbortLeavesNothingAndTheSweepAbortsWhatACrashLeft() async throws {
        var rng = SplitMix(seed: 4)
        let aborted = try await blobs.upload("files/t/aborted")
        try await aborted.write(rng.bytes(6 << 20))
        await aborted.abort()
        #expect(try await openUploads().isEmpty)
        await #expect(throws: StorageError.self) { _ = try await self.blobs.download("files/t/aborted") }
        // A crash: a part sent, then nothing.
        let crashed = try await blobs.upload("files/t/crashed")
        try await crashed.write(rng.bytes(6 << 20))
        let kept = try await blobs.upload("files/t/kept")
        try await kept.write([7])
        try await kept.commit()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(try await openUploads() == ["kw/files/t/crashed"])
        // A committed blob too recent to judge is not listed. (An upload's age cannot be checked
        // here: moto reports every upload as initiated on 2010-11-10, so any sweep aborts them.)
        #expect(try await blobs.sweepable(under: "files/", before: now - 3_600_000, abandoned: now - 3_600_000).isEmpty)
        #expect(try await blobs.sweepable(under: "files/", before: now + 3_600_000, abandoned: now + 3_600_000).contains("files/t/kept"))
        #expect(try await openUploads().isEmpty)
    }

    @Test func anUnknownBucketIsTheStoresFaultNotAMissingBlob() async throws {
        let lost = try S3BlobStore(configuration: .init(bucket: "no-such-bucket", region: "us-east-1", endpoint: moto.url),
                                   credentials: AWSCredentials(accessKeyID: "testing", secretAccessKey: "testing"))
        let up = try await lost.upload("files/t/x")
        try await up.write([1])
        for attempt in [{ try await up.commit() }, { _ = try await lost.download("files/t/x") }] {
            do {
                try await attempt()
                Issue.record("no error")
            } catch let e as StorageError {
                #expect(e.code == .unavailable && e.reason.contains("NoSuchBucket"), "\(e)")
            }
        }
        do {
            _ = try await blobs.download("files/t/never-written")
            Issue.record("no error")
        } catch let e as StorageError {
            #expect(e.code == .notFound)
        }
    }
}
