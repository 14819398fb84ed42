import Testing

@testable import NecroDocker

@Suite struct FrameReaderTests {
    /// Frames split anywhere, and a payload larger than Docker's 16 KB frames, come out whole.
    @Test func framesSplitAnywhereComeOutAsTheirPayloadsInOrder() {
        func frame(_ stream: UInt8, _ payload: [UInt8]) -> [UInt8] {
            let n = payload.count
            return [stream, 0, 0, 0, UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
        }
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: 40_000)
        let bytes = frame(1, Array("out\n".utf8)) + frame(2, Array("err\n".utf8)) + frame(1, long) + frame(1, [])
        for chunk in [1, 3, 7, 8, 9, 1000, bytes.count] {
            var reader = FrameReader()
            var payload: [UInt8] = []
            var offset = 0
            while offset < bytes.count {
                payload += reader.take(bytes[offset..<min(offset + chunk, bytes.count)])
                offset += chunk
            }
            #expect(payload == Array("out\nerr\n".utf8) + long, "in chunks of \(chunk)")
        }
    }
}
