/// When to try a failed task again: exponential backoff with an optional jitter.
public struct RetryPolicy: Hashable, Sendable {
    /// Attempts in all, the first one included.
    public var maxAttempts: Int
    public var initialDelay: Duration
    public var base: Double
    public var maxDelay: Duration
    /// Fraction of the delay that may be taken off at random: 0 is none, 1 is "full jitter".
    public var jitter: Double

    public init(
        maxAttempts: Int = 3,
        initialDelay: Duration = .seconds(1),
        base: Double = 2,
        maxDelay: Duration = .seconds(300),
        jitter: Double = 0
    ) {
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.base = base
        self.maxDelay = maxDelay
        self.jitter = min(max(jitter, 0), 1)
    }

    /// Whether a task that has failed `attempt` times (1 for its first failure) gets another try.
    public func shouldRetry(afterAttempt attempt: Int) -> Bool { attempt < maxAttempts }

    /// The wait before the try that follows failed attempt number `attempt` (1-based), without jitter:
    /// `min(maxDelay, initialDelay * base^(attempt - 1))`.
    public func delay(afterAttempt attempt: Int) -> Duration {
        let initial = initialDelay.seconds
        let cap = maxDelay.seconds
        let exponent = Double(max(attempt, 1) - 1)
        let raw = initial * pow(base, exponent)
        return .seconds(raw.isFinite ? min(cap, raw) : cap)
    }

    /// The wait with jitter drawn from `random`: a uniform share of up to `jitter` of it is taken off.
    public func delay(afterAttempt attempt: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let plain = delay(afterAttempt: attempt)
        guard jitter > 0 else { return plain }
        let cut = Double.random(in: 0..<1, using: &random) * jitter
        return .seconds(plain.seconds * (1 - cut))
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}

private func pow(_ base: Double, _ exponent: Double) -> Double {
    // Core has no Foundation: integer exponents by squaring, which is all backoff needs.
    var result = 1.0
    var b = base
    var e = Int(exponent)
    while e > 0 {
        if e & 1 == 1 { result *= b }
        b *= b
        e >>= 1
        if !result.isFinite { return .infinity }
    }
    return result
}
