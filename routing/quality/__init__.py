"""Quality: automated scoring of every answer, feedback, satisfaction, the judge,
and each deployment's rolling quality for routing (README: "Quality and feedback")."""
