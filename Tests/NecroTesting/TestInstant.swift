/// An instant on a clock that only tests move: the engine's time, with no sleeping.
public struct TestInstant: InstantProtocol, Sendable, CustomStringConvertible {
    public var offset: Duration

    public init(_ offset: Duration = .zero) { self.offset = offset }

    public func advanced(by duration: Duration) -> TestInstant { TestInstant(offset + duration) }
    public func duration(to other: TestInstant) -> Duration { other.offset - offset }
    public static func < (a: TestInstant, b: TestInstant) -> Bool { a.offset < b.offset }

    public var description: String { "t+\(offset)" }
}
