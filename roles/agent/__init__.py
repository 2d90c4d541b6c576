"""The LLM backbone's side of the roles: handoff forms, decision briefs, the tool-calling loop, the tools, and the
`AgentPolicy` that puts them behind the same interface as the playbook."""
