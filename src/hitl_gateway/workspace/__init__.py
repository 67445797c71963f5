"""The reviewer workspace: server-rendered pages, served by the gateway's own HTTP server,
where reviewers sign in, take held items from their pools' queues, read them with the
rubric, and approve, edit or reject them (the review API's decision path, nothing else)."""
