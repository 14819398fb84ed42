import Foundation
import NecroCore
import NecroTesting
import Testing

/// A Kiro `requirements.md`, in the shape Kiro writes (`### Requirement N`, `**User Story:**`,
/// `#### Acceptance Criteria`, numbered WHEN/THEN criteria), and one with titles and wrapped lines
/// (`Tests/Fixtures/agents/greeter`, the spec `AgentTests` runs).
let kiroRequirements = try! String(contentsOfFile: "\(repositoryRoot)/Tests/Fixtures/agents/greeter/requirements.md", encoding: .utf8)

@Suite struct KiroRequirementsTests {
    @Test func requirementsAreReadWithTheirStoriesAndCriteria() {
        let requirements = KiroRequirements(markdown: kiroRequirements).requirements
        #expect(requirements.map(\.number) == ["1", "2"])
        #expect(requirements[0].userStory == "As a visitor, I want to be greeted, so that I feel welcome.")
        #expect(requirements[0].criteria.map(\.number) == [1, 2, 3])
        #expect(requirements[0].criteria[1].text == "WHEN the visitor gives a name THEN the system SHALL print \"hello, NAME\"\n   and keep the name's case")
        #expect(requirements[1].title == "Farewells" && requirements[1].userStory == "As a visitor, I want a goodbye, so that I know the greeter is done.")
        #expect(requirements[1].criteria.map(\.number) == [1])
    }

    @Test func requirementsInAnotherLanguageWithLetteredIdsAreRead() {
        let requirements = KiroRequirements(markdown: japaneseRequirements)
        #expect(requirements.requirements.map(\.number) == ["1", "27A"])
        #expect(requirements.requirements[0].title == "招待" && requirements.requirements[0].userStory.hasPrefix("管理者として"))
        #expect(requirements.requirements[0].criteria.map(\.number) == [1, 2])
        #expect(requirements.requirements[1].userStory == "ユーザーとして、二要素で守りたい。", "the first label is the story")
        #expect(requirements.requirements[1].criteria.count == 1, "the appendix's list is not a criterion")
        let cited = requirements.cited(["27A.1", "1（招待まわり）", "全要件のテストカバレッジ"])
        #expect(cited.map { $0["requirement"] } == ["27A", "1", nil])
        #expect(cited[1]["criteria"]?.arrayValue?.count == 2, "the note in parentheses is left")
        #expect(cited[2]["citation"] == "全要件のテストカバレッジ" && cited[2]["missing"]?.stringValue?.contains("names no requirement by number") == true)
        #expect(KiroRequirements.expand("1-3") == ["1", "2", "3"] && KiroRequirements.expand("17.1-17.3") == ["17.1", "17.2", "17.3"])
        #expect(KiroRequirements.expand("All requirements (performance)") == [])
    }

    @Test func aCitationResolvesToItsCriterionWithTheStoryAWholeRequirementOrSaysWhatIsMissing() {
        let requirements = KiroRequirements(markdown: kiroRequirements)
        let cited = requirements.cited(["1.2", "Requirement 2", "1.3", "7.1", "1.9"])
        #expect(cited.count == 3)
        #expect(cited[0]["requirement"] == "1" && cited[0]["user_story"] == "As a visitor, I want to be greeted, so that I feel welcome.")
        #expect(cited[0]["criteria"]?.arrayValue?.compactMap { $0["number"]?.intValue } == [2, 3])
        #expect(cited[0]["missing"] == "acceptance criteria 1.9 are not in requirements.md")
        #expect(cited[1]["title"] == "Farewells" && cited[1]["criteria"]?.arrayValue?.count == 1)
        #expect(cited[2]["missing"] == "requirement 7 is not in requirements.md")
        #expect(requirements.cited(["1.1-1.3"])[0]["criteria"]?.arrayValue?.count == 3)
        #expect(requirements.cited(["see the design", ""]).map { $0["citation"] } == ["see the design"], "prose is said to name nothing")
    }
}

/// A Kiro `requirements.md` written in Japanese, in the shape of a public spec we read
/// (`inakanou/ArchiTrack`, `.kiro/specs/user-authentication/requirements.md`): `### 要件N: …`,
/// `**目的:**` for the story, `#### 受入基準`, ids with a letter (`27A`). Our own text.
let japaneseRequirements = """
    # 要件定義書

    ## はじめに

    **セキュリティポリシー:**
    - 招待制のみ

    ## 要件

    ### 要件1: 招待

    **目的:** 管理者として、ユーザーを招待したい。そうすることで、承認された人だけが入れる。

    #### 受入基準

    1. WHEN 管理者が招待する THEN システムは招待トークンを発行しなければならない
    2. IF トークンが期限切れである THEN システムは登録を拒否しなければならない

    ### 要件27A: 二要素認証

    **目的:** ユーザーとして、二要素で守りたい。

    **補足:** TOTPを使う。

    #### 受入基準

    1. WHEN 2FAが有効である THEN システムはコードを求めなければならない

    ## 付録

    1. これは基準ではない
    """

@Suite struct PromptTemplateTests {
    static let context: [String: JSONValue] = [
        "spec": "greeter", "attempt": 2,
        "task": [
            "id": "1.2", "title": "Greet by name", "description": "Use the name given on the command line.",
            "steps": [["title": "Read the name", "done": true], ["title": "Print the greeting", "done": false]],
            "metadata": ["details": "design.md, section Greeting", "completion_criteria": "", "requirements": ["1.2"], "leverage": "Sources/Greet"],
            "gates": [["swift", "test"]],
        ],
        "requirements": .array(KiroRequirements(markdown: kiroRequirements).cited(["1.2"])),
        "design": ["path": "design.md", "text": "# Design\n\nOne executable, `greet`."],
        "dependencies": ["1.1"], "dependency_branches": [["task": "1.1", "branch": "necro/greeter/1.1"]],
        "checkpoint": ["sequence_number": 3, "work_items_done": ["step_1"], "agent_session": "abc"],
        "previous_failure": ["attempt": 1, "reason": "gate `swift test` failed: exit code 1", "gate": "swift test", "output_tail": "error: expected hello, NAME\n"],
    ]

    @Test func theDefaultPromptHoldsTheTaskItsStepsRequirementsDesignDependenciesCheckpointAndFailure() {
        let prompt = PromptTemplate.standard.render(context: Self.context)
        for part in [
            "task 1.2 of the spec \"greeter\": Greet by name", "Use the name given on the command line.",
            "Details: design.md, section Greeting\nLeverage: Sources/Greet\n\n## Steps",
            "1. [x] Read the name\n2. [ ] Print the greeting",
            "### Requirement 1\n\nUser story: As a visitor, I want to be greeted, so that I feel welcome.",
            "2. WHEN the visitor gives a name THEN the system SHALL print \"hello, NAME\"\n   and keep the name's case",
            "The spec's design (design.md), for reference:\n\n### Design\n\nOne executable, `greet`.",
            "- task 1.1 (branch necro/greeter/1.1, merged into this folder)",
            "left off at checkpoint 3", "Done already: step 1.", "Your conversation of then goes on.",
            "Attempt 1 failed: gate `swift test` failed: exit code 1.", "```\nerror: expected hello, NAME\n```",
            "these checks pass there: `swift test`.",
        ] {
            #expect(prompt.contains(part), "\(part)\n---\n\(prompt)")
        }
        #expect(!prompt.contains("\n\n\n"), "no runs of blank lines")
        #expect(!prompt.contains("Completion criteria"), "an empty note is left out")
        #expect(!prompt.contains("{{"))
    }

    @Test func emptyPartsAreLeftOutAndOneStepIsNamedForStepsEach() {
        let bare: [String: JSONValue] = ["spec": "s", "task": ["id": "3", "title": "Tidy", "steps": [["title": "A"], ["title": "B"]]]]
        let prompt = PromptTemplate.standard.render(context: bare, step: 2)
        #expect(prompt.contains("Do step 2 only: B"))
        for absent in ["## Requirements", "## Design", "## The tasks it depends on", "## Where this attempt", "## What went wrong", "checks pass"] {
            #expect(!prompt.contains(absent), "\(absent)\n---\n\(prompt)")
        }
    }

    @Test func aDesignsHeadingsSitUnderThePromptsAndLongTextIsCutBetweenCharacters() {
        #expect(PromptTemplate.demoted("# Design\n## Error Handling\n```\n# a comment\n```") == "### Design\n#### Error Handling\n```\n# a comment\n```")
        #expect("共通の設計".utf8Prefix(7) == "共通" && "abc".utf8Prefix(10) == "abc" && "共".utf8Prefix(2) == "")
    }

    @Test func aPartsTagsTakeTheirLineOnlyWhenAloneOnItAndValuesKeepTheirBlankLines() throws {
        let inline = try PromptTemplate("Checks: {{#gates}}{{gates}}{{/gates}}\nNext\n  {{#steps}}\nSteps:\n{{steps}}\n  {{/steps}}\nEnd")
        #expect(inline.render(context: Self.context) == "Checks: `swift test`\nNext\nSteps:\n1. [x] Read the name\n2. [ ] Print the greeting\nEnd\n")
        var context = Self.context
        context["design"] = ["path": "design.md", "text": "```swift\nlet a = 1\n\n\nlet b = 2\n```"]
        #expect(PromptTemplate.standard.render(context: context).contains("let a = 1\n\n\nlet b = 2"), "a value's own blank lines stay")
        // CRLF templates and documents read as LF ones.
        #expect(try PromptTemplate("A\r\n{{#steps}}\r\nB\r\n{{/steps}}\r\nC").render(context: Self.context) == "A\r\nB\r\nC\n")
        #expect(KiroRequirements(markdown: kiroRequirements.replacing("\n", with: "\r\n")) == KiroRequirements(markdown: kiroRequirements))
        #expect(throws: PromptTemplate.Invalid.self) { try PromptTemplate(String(repeating: "{{#spec}}", count: 17) + String(repeating: "{{/spec}}", count: 17)) }
    }

    @Test func aTemplateWithAnUnknownNameOrAnOpenPartIsRefusedWithItsLine() throws {
        let custom = try PromptTemplate("Do {{ task.title }}.\n{{#gates}}Check: {{gates}}{{/gates}}")
        #expect(custom.render(context: Self.context) == "Do Greet by name.\nCheck: `swift test`\n")
        #expect(throws: PromptTemplate.Invalid(line: 2, message: "unknown name {{task.owner}} (known: \(PromptTemplate.names.sorted().joined(separator: ", ")))")) {
            try PromptTemplate("ok\n{{task.owner}}")
        }
        #expect(throws: PromptTemplate.Invalid(line: 3, message: "{{#steps}} is not closed by {{/steps}}")) { try PromptTemplate("{{#steps}}\n{{steps}}\n") }
        #expect(throws: PromptTemplate.Invalid(line: 1, message: "{{/steps}} closes nothing")) { try PromptTemplate("{{/steps}}") }
        #expect(throws: PromptTemplate.Invalid(line: 1, message: "{{ is not closed by }}")) { try PromptTemplate("{{steps\n}}") }
    }
}
