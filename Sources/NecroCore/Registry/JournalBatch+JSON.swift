extension JournalBatch {
    /// The batch as one line of the journal (without its newline), in the shape the journal's
    /// reader decodes: `id`, `reason`, `transitions` (each with its `events`) and `runners`.
    /// Written directly as bytes: the dispatcher writes one per turn, before its effects.
    public func jsonLine(reason: String) -> [UInt8] {
        var json = JSONWriter()
        json.bytes.reserveCapacity(1024 * (transitions.count + runners.count) + 128)
        json.object { json in
            json.field("id", id)
            json.field("reason", reason)
            json.array("transitions", transitions) { json, t in
                json.object { json in
                    json.field("spec", t.spec)
                    json.field("task", t.task?.rawValue)
                    if let expected = t.expected {
                        json.array("expected", expected.map(\.rawValue).sorted()) { json, state in json.value(state) }
                    }
                    json.field("state", t.newState?.rawValue)
                    json.field("attempts", t.attempts)
                    json.field("sets_reason", t.reason != nil)
                    json.field("reason", t.reason ?? nil)
                    json.field("at", t.at?.secondsSince1970)
                    if let slot = t.slot {
                        json.key("slot")
                        json.object { json in
                            json.field("id", slot.id)
                            json.field("path", slot.path)
                            json.field("branch", slot.branch)
                        }
                    }
                    json.array("events", t.events) { json, event in
                        json.object { json in
                            json.field("type", event.type.rawValue)
                            json.field("actor", event.actor)
                            json.field("span_id", event.spanID)
                            json.field("parent_span_id", event.parentSpanID)
                            json.field("phase", event.phase)
                            if let timestamp = event.timestamp { json.field("at", timestamp.secondsSince1970) }
                            json.key("payload")
                            JSONValue.object(event.payload).write(to: &json.bytes)
                            json.needsComma = true
                        }
                    }
                }
            }
            json.array("runners", runners) { json, r in
                json.object { json in
                    json.field("id", r.id.rawValue)
                    json.field("spec", r.task.spec)
                    json.field("task", r.task.id.rawValue)
                    json.field("attempt", r.attempt)
                    json.field("pool", r.pool)
                    json.field("pool_type", r.poolType.name)
                    json.field("handle", r.handle)
                    json.field("state", r.state.rawValue)
                    json.field("pid", r.pid.map(Int.init))
                    json.field("process_start_time", r.processStartTime.map { String($0) }, raw: true)
                    json.field("log_path", r.logPath)
                    json.field("status_table", r.status?.path)
                    json.field("status_offset", r.status?.offset)
                    json.field("started_at", r.startedAt.secondsSince1970)
                    json.field("last_heartbeat", r.lastHeartbeat?.secondsSince1970)
                    json.field("ended_at", r.endedAt?.secondsSince1970)
                    json.field("exit", r.exit)
                }
            }
        }
        return json.bytes
    }
}

/// Writes a JSON object field by field; absent (nil) fields are left out.
struct JSONWriter {
    var bytes: [UInt8] = []
    /// Whether the next member or element follows another.
    var needsComma = false

    mutating func object(_ body: (inout JSONWriter) -> Void) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
        body(&self)
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func key(_ name: String) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        JSONValue.writeString(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func value(_ text: String) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        JSONValue.writeString(text, to: &bytes)
        needsComma = true
    }

    /// A number or literal, as written.
    private mutating func raw(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
        needsComma = true
    }

    mutating func field(_ name: String, _ text: String?, raw isRaw: Bool = false) {
        guard let text else { return }
        key(name)
        if isRaw { raw(text) } else { value(text) }
    }

    mutating func field(_ name: String, _ number: Int?) {
        guard let number else { return }
        key(name)
        raw(String(number))
    }

    mutating func field(_ name: String, _ number: Double?) {
        guard let number, number.isFinite else { return }
        key(name)
        raw(String(number))
    }

    mutating func field(_ name: String, _ flag: Bool) {
        key(name)
        raw(flag ? "true" : "false")
    }

    mutating func array<T>(_ name: String, _ elements: [T], _ element: (inout JSONWriter, T) -> Void) {
        key(name)
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for item in elements { element(&self, item) }
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }
}
