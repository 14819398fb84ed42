import NecroCore
import Testing

@Suite struct SpecCheckboxesTests {
    private let text = """
        # Plan
        - [ ] 1. One
          - [ ] a step, never ticked by id
        - [-] 2. Two
          - [ ]* 2.1 Optional
          - [ ]\\* 2.2 Escaped optional
        ```
        - [ ] 3. In a code block: not a task
        ```
        - [ ] 3. Three
        """

    @Test func onlyTheMarkOfTheNamedTasksChanges() {
        let bytes = Array(text.utf8)
        let (patched, missing) = SpecCheckboxes.setting(["1": UInt8(ascii: "x"), "2.2": UInt8(ascii: "-"), "3": UInt8(ascii: "x"), "9": UInt8(ascii: "x")], in: bytes)
        #expect(missing == ["9"])
        let expected = text.replacingOccurrences(of: "- [ ] 1. One", with: "- [x] 1. One")
            .replacingOccurrences(of: "- [ ]\\* 2.2", with: "- [-]\\* 2.2")
            .replacingOccurrences(of: "- [ ] 3. Three", with: "- [x] 3. Three")
        #expect(String(decoding: patched, as: UTF8.self) == expected, "the code block's line is left alone")
        #expect(patched.count == bytes.count)
        #expect(SpecCheckboxes.marks(in: bytes).count == 5)
    }

    @Test func twoVersionsThatDifferOnlyInTicksJoinWithEveryTick() {
        let ours = Array("- [x] 1. One\n- [ ] 2. Two\n- [-] 3. Three\n".utf8)
        let theirs = Array("- [ ] 1. One\n- [x] 2. Two\n- [ ] 3. Three\n".utf8)
        #expect(SpecCheckboxes.union(ours, theirs).map { String(decoding: $0, as: UTF8.self) } == "- [x] 1. One\n- [x] 2. Two\n- [-] 3. Three\n")
        #expect(SpecCheckboxes.union(ours, Array("- [x] 1. Uno\n- [ ] 2. Two\n- [-] 3. Three\n".utf8)) == nil, "a title differs")
        #expect(SpecCheckboxes.union(ours, Array("- [x] 1. One\n".utf8)) == nil)
    }
}
