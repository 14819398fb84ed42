/// What a coding agent tells about its work when it prints structured output: Claude Code's
/// `--output-format stream-json` lines and Codex's `exec --json` lines, one JSON object each.
/// `AgentOutput.signals(of:now:)` reads one line; anything it does not know says nothing.
public enum AgentSignal: Hashable, Sendable {
    /// The agent's own session (Claude Code's `session_id`, Codex's thread id): what resumes it.
    case session(id: String, agent: String, model: String?)
    /// It started a tool: a shell command, a file edit… (`detail`: the command or the paths).
    case tool(name: String, detail: String)
    /// Its to-do list, whole, as it last wrote it.
    case todos([AgentTodo])
    /// What a turn or a run cost; added up per task.
    case usage(AgentUsage)
    /// A provider's rate or usage limit stopped it; when it resets, if it said.
    case limit(UsageLimitNotice)
    /// It reported an error that ends its run.
    case failed(String)
}

/// One item of an agent's to-do list.
public struct AgentTodo: Hashable, Sendable {
    public enum Status: String, Hashable, Sendable {
        case pending, inProgress = "in_progress", completed
    }

    public var text: String
    public var status: Status

    public init(text: String, status: Status) {
        self.text = text
        self.status = status
    }
}

/// Cost and tokens an agent reported, as a sum.
public struct AgentUsage: Hashable, Sendable {
    public var costUSD: Double
    /// Tokens by kind: `input`, `output`, `cache_read`, `cache_creation`.
    public var tokens: [String: Int]
    public var turns: Int

    public init(costUSD: Double = 0, tokens: [String: Int] = [:], turns: Int = 0) {
        self.costUSD = costUSD
        self.tokens = tokens
        self.turns = turns
    }

    public static let tokenKinds = ["input", "output", "cache_read", "cache_creation"]

    public var isEmpty: Bool { costUSD == 0 && tokens.values.allSatisfy { $0 == 0 } && turns == 0 }
    public var totalTokens: Int { tokens.values.reduce(0, Self.sum) }

    /// The most a count may be (tokens, turns) and a cost (dollars): more is a mistake, and sums
    /// stay far from overflowing.
    public static let countLimit = 1_000_000_000_000_000
    public static let costLimit = 1_000_000_000.0

    /// Adds without overflowing: at most `Int.max`.
    static func sum(_ a: Int, _ b: Int) -> Int {
        let (total, overflow) = a.addingReportingOverflow(b)
        return overflow ? Int.max : total
    }

    public static func + (a: AgentUsage, b: AgentUsage) -> AgentUsage {
        AgentUsage(costUSD: a.costUSD + b.costUSD, tokens: a.tokens.merging(b.tokens, uniquingKeysWith: sum), turns: sum(a.turns, b.turns))
    }

    /// Dollars as the API and events show them: to the millionth.
    public static func rounded(_ dollars: Double) -> Double { (min(dollars, costLimit) * 1_000_000).rounded() / 1_000_000 }

    public static func += (a: inout AgentUsage, b: AgentUsage) { a = a + b }

    /// As an `agent_usage` event's payload has it, and as the API shows it.
    public var json: [String: JSONValue] {
        [
            "cost_usd": .double(Self.rounded(costUSD)),
            "tokens": .object(Dictionary(uniqueKeysWithValues: Self.tokenKinds.map { ($0, .int(tokens[$0] ?? 0)) })),
            "turns": .int(turns),
        ]
    }

    /// From an `agent_usage` payload (nil if it holds none).
    public init?(payload: [String: JSONValue]) {
        let cost = payload["cost_usd"]?.doubleValue
        var tokens: [String: Int] = [:]
        if case .object(let counts)? = payload["tokens"] {
            for (kind, value) in counts { if let count = value.intValue, count > 0 { tokens[kind] = min(count, Self.countLimit) } }
        }
        guard cost != nil || !tokens.isEmpty else { return nil }
        self.init(
            costUSD: min(Self.costLimit, max(0, cost.flatMap { $0.isFinite ? $0 : nil } ?? 0)), tokens: tokens,
            turns: min(Self.countLimit, max(0, payload["turns"]?.intValue ?? 0)))
    }
}

/// A provider's limit: its message, and when it resets (nil: not said).
public struct UsageLimitNotice: Hashable, Sendable {
    public var message: String
    public var resetsAt: Timestamp?

    public init(message: String, resetsAt: Timestamp?) {
        self.message = message
        self.resetsAt = resetsAt
    }
}

public enum AgentOutput {
    /// What one line of an agent's JSON output says. Claude Code's lines have `type` `system`,
    /// `assistant`, `user`, `result`; Codex's `thread.started`, `turn.*`, `item.*`, `error`. A line
    /// of either that says nothing of use, or of neither, gives nothing.
    public static func signals(of line: [String: JSONValue], now: Timestamp) -> [AgentSignal] {
        guard case .string(let type)? = line["type"] else { return [] }
        switch type {
        // Claude Code (stream-json).
        case "system":
            guard line["subtype"] == "init", let session = line["session_id"]?.stringValue, !session.isEmpty else { return [] }
            return [.session(id: session, agent: "claude", model: line["model"]?.stringValue)]
        case "assistant":
            guard case .object(let message)? = line["message"], case .array(let content)? = message["content"] else { return [] }
            var signals: [AgentSignal] = []
            for case .object(let item) in content where item["type"] == "tool_use" {
                let name = item["name"]?.stringValue ?? "tool"
                let input = item["input"]
                if name == "TodoWrite", case .array(let todos)? = input?["todos"] {
                    signals.append(.todos(todos.compactMap(claudeTodo)))
                } else {
                    signals.append(.tool(name: name, detail: claudeToolDetail(input)))
                }
            }
            return signals
        case "rate_limit_event":
            // Claude Code on a subscription: `rejected` is the limit, with its reset in seconds.
            guard let info = line["rate_limit_info"]?.objectValue, info["status"] == "rejected" else { return [] }
            let kind = info["rateLimitType"]?.stringValue.map { " (\($0))" } ?? ""
            let reset = info["resetsAt"]?.doubleValue.map { Timestamp(secondsSince1970: $0) }
            return [.limit(UsageLimitNotice(message: "rate limit reached\(kind)", resetsAt: reset))]
        case "result":
            var signals: [AgentSignal] = []
            var usage = AgentUsage(turns: min(AgentUsage.countLimit, max(0, line["num_turns"]?.intValue ?? 0)))
            if let cost = line["total_cost_usd"]?.doubleValue ?? line["cost_usd"]?.doubleValue, cost.isFinite, cost > 0 {
                usage.costUSD = min(cost, AgentUsage.costLimit)
            }
            if case .object(let counts)? = line["usage"] {
                usage.tokens = tokens(counts, [
                    ("input_tokens", "input"), ("output_tokens", "output"), ("cache_read_input_tokens", "cache_read"),
                    ("cache_creation_input_tokens", "cache_creation"),
                ])
            }
            if !usage.isEmpty { signals.append(.usage(usage)) }
            if line["is_error"] == true || (line["subtype"]?.stringValue).map({ $0.hasPrefix("error") }) == true {
                let text = [line["result"]?.stringValue, line["subtype"]?.stringValue].compactMap { $0 }.first { !$0.isEmpty } ?? "error"
                if let limit = UsageLimits.notice(in: text, now: now) {
                    signals.append(.limit(limit))
                } else if line["api_error_status"]?.intValue == 429 {
                    signals.append(.limit(UsageLimitNotice(message: String(text.prefix(500)), resetsAt: nil)))
                } else {
                    signals.append(.failed(text))
                }
            }
            return signals
        // Codex (exec --json).
        case "thread.started":
            guard let thread = line["thread_id"]?.stringValue, !thread.isEmpty else { return [] }
            return [.session(id: thread, agent: "codex", model: nil)]
        case "turn.completed":
            guard case .object(let counts)? = line["usage"] else { return [] }
            // Codex counts cached input inside input: kept apart, as Claude Code reports it.
            var tokens = tokens(counts, [("input_tokens", "input"), ("output_tokens", "output"), ("cached_input_tokens", "cache_read")])
            if let cached = tokens["cache_read"], let input = tokens["input"] { tokens["input"] = max(0, input - cached) }
            return [.usage(AgentUsage(tokens: tokens, turns: 1))]
        case "turn.failed", "error":
            let text = (line["error"]?["message"] ?? line["message"])?.stringValue ?? type
            if let limit = UsageLimits.notice(in: text, now: now) { return [.limit(limit)] }
            return type == "turn.failed" ? [.failed(text)] : []
        case "item.started", "item.updated", "item.completed":
            guard case .object(let item)? = line["item"], let kind = item["type"]?.stringValue else { return [] }
            switch kind {
            case "todo_list":
                guard case .array(let items)? = item["items"] else { return [] }
                return [.todos(items.compactMap(codexTodo))]
            case "command_execution" where type == "item.started":
                return [.tool(name: "command", detail: item["command"]?.stringValue ?? "")]
            case "file_change" where type == "item.completed":
                guard case .array(let changes)? = item["changes"] else { return [] }
                let paths = changes.compactMap { change -> String? in
                    guard let path = change["path"]?.stringValue else { return nil }
                    return (change["kind"]?.stringValue).map { "\($0) \(path)" } ?? path
                }
                return [.tool(name: "file_change", detail: paths.joined(separator: ", "))]
            case "mcp_tool_call" where type == "item.started":
                let name = [item["server"]?.stringValue, item["tool"]?.stringValue].compactMap { $0 }.joined(separator: ".")
                return [.tool(name: "mcp", detail: name)]
            case "web_search" where type == "item.started":
                return [.tool(name: "web_search", detail: item["query"]?.stringValue ?? "")]
            default:
                return []
            }
        default:
            return []
        }
    }

    /// What a line of plain text says: Aider's `Tokens: 1.2k sent, 345 received. Cost: $0.01
    /// message, $0.05 session.` (the cost is added per message; cache counts, when present, sit
    /// between the two and are not read).
    public static func signals(ofText line: String) -> [AgentSignal] {
        guard line.hasPrefix("Tokens: ") else { return [] }
        let afterPrefix = line.dropFirst(8)
        guard let sent = afterPrefix.firstRange(of: " sent") else { return [] }
        var usage = AgentUsage(turns: 1)
        usage.tokens["input"] = count(afterPrefix[..<sent.lowerBound])
        if let received = line.firstRange(of: " received"), received.lowerBound > sent.upperBound {
            let before = line[..<received.lowerBound]
            let start = before.lastIndex(of: " ").map { before.index(after: $0) } ?? before.startIndex
            usage.tokens["output"] = count(before[start...])
        }
        if let cost = line.firstRange(of: "Cost: $") {
            let digits = line[cost.upperBound...].prefix { $0.isNumber || $0 == "." }
            usage.costUSD = min(AgentUsage.costLimit, Double(String(digits)).flatMap { $0.isFinite ? $0 : nil } ?? 0)
        }
        usage.tokens = usage.tokens.filter { $0.value > 0 }
        return usage.isEmpty ? [] : [.usage(usage)]
    }

    /// `1.2k`, `345`, `2M`, `12,345`.
    private static func count(_ text: Substring) -> Int {
        let trimmed = text.drop { $0 == " " }
        let number = trimmed.prefix { $0.isNumber || $0 == "." || $0 == "," }
        guard let value = Double(String(number.filter { $0 != "," })), value.isFinite, value >= 0 else { return 0 }
        let scale: Double
        switch trimmed.dropFirst(number.count).first {
        case "k"?: scale = 1000
        case "M"?, "m"?: scale = 1_000_000
        default: scale = 1
        }
        return Int(min(value * scale, Double(AgentUsage.countLimit)))
    }

    private static func tokens(_ counts: [String: JSONValue], _ names: [(String, String)]) -> [String: Int] {
        var tokens: [String: Int] = [:]
        for (field, kind) in names {
            if let count = counts[field]?.intValue, count > 0 { tokens[kind] = min(count, AgentUsage.countLimit) }
        }
        return tokens
    }

    private static func claudeTodo(_ value: JSONValue) -> AgentTodo? {
        guard let text = value["content"]?.stringValue, !text.isEmpty else { return nil }
        return AgentTodo(text: text, status: AgentTodo.Status(rawValue: value["status"]?.stringValue ?? "") ?? .pending)
    }

    private static func codexTodo(_ value: JSONValue) -> AgentTodo? {
        guard let text = value["text"]?.stringValue, !text.isEmpty else { return nil }
        return AgentTodo(text: text, status: value["completed"] == true ? .completed : .pending)
    }

    /// A tool call in a few words: a shell command, a file path, a pattern.
    private static func claudeToolDetail(_ input: JSONValue?) -> String {
        for field in ["command", "file_path", "path", "pattern", "url", "description"] {
            if let text = input?[field]?.stringValue { return text }
        }
        return ""
    }
}
