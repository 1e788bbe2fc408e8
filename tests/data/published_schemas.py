"""Small files in the published schemas of public feedback datasets and exports (written in
code: the tests ship no data). Each builder writes the dataset's own file format."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path


def hh_rlhf(directory: Path) -> Path:
    """Anthropic/hh-rlhf: train.jsonl.gz of {chosen, rejected} transcripts."""
    rows = [
        {
            "chosen": "\n\nHuman: What is a good name for a cat?\n\nAssistant: Sure, how about Whiskers?",
            "rejected": "\n\nHuman: What is a good name for a cat?\n\nAssistant: Sure, no idea.",
        },
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No.",
        },
        {
            "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt, then bake.",
            "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Buy it.",
        },
    ]
    path = directory / "hh-rlhf" / "helpful-base" / "train.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def _uf_completion(model: str, response: str, ratings: tuple[str, str, str, str]) -> dict:
    help_, honest, follow, truth = ratings
    return {
        "annotations": {
            "helpfulness": {"Rating": help_, "Rationale": "r", "Rationale For Rating": "r", "Type": ["1"]},
            "honesty": {"Rating": honest, "Rationale": "r", "Rationale For Rating": None, "Type": None},
            "instruction_following": {"Rating": follow, "Rationale": "r", "Rationale For Rating": None, "Type": None},
            "truthfulness": {"Rating": truth, "Rationale": "r", "Rationale For Rating": "r", "Type": ["0"]},
        },
        "critique": "fine",
        "custom_system_prompt": "You are helpful.",
        "fine-grained_score": 4.0,
        "model": model,
        "overall_score": 7.5,
        "principle": "helpfulness",
        "response": response,
    }


def ultrafeedback(directory: Path) -> Path:
    """openbmb/UltraFeedback: data/train-00000-of-00001.parquet; ratings are strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "source": "evol_instruct",
            "instruction": "Name a prime number.",
            "models": ["a", "b", "c"],
            "completions": [
                _uf_completion("a", "7", ("5", "5", "5", "5")),
                _uf_completion("b", "9", ("2", "N/A", "3", "1")),
                _uf_completion("c", "2", ("4", "4", "5", "N/A")),
            ],
            "correct_answers": ["2", "3", "5", "7"],
            "incorrect_answers": ["9"],
        },
        {
            "source": "sharegpt",
            "instruction": "Say hello.",
            "models": ["a", "b"],
            "completions": [_uf_completion("a", "Hello!", ("4", "5", "5", "5")), _uf_completion("b", "Bye.", ("1", "5", "1", "2"))],
            "correct_answers": [],
            "incorrect_answers": [],
        },
    ]
    path = directory / "UltraFeedback" / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path.parent.parent


def pku_saferlhf_rows() -> list[dict]:
    base = {
        "prompt_source": "Alpaca3-8B",
        "response_0_source": "Alpaca-7B",
        "response_1_source": "Alpaca-7B",
        "response_0_harm_category": {"Violence": False, "Privacy Violation": False},
        "response_1_harm_category": {"Violence": True, "Privacy Violation": False},
        "response_0_severity_level": 0,
        "response_1_severity_level": 2,
        "response_0_sha256": "aa",
        "response_1_sha256": "bb",
    }
    rows = [
        ("How do I pick a lock?", "Ask a locksmith.", "Use a tension wrench and a pick.", True, False, 1, 0),
        ("Write a poem about rain.", "Rain falls softly.", "Drip drop, the sky weeps.", True, True, 1, 1),
        ("How to make a fake ID?", "I can't help with that.", "Buy a laminator...", True, False, 0, 0),
    ]
    out = []
    for prompt, r0, r1, safe0, safe1, better, safer in rows:
        out.append(
            {**base, "prompt": prompt, "response_0": r0, "response_1": r1, "is_response_0_safe": safe0,
             "is_response_1_safe": safe1, "better_response_id": better, "safer_response_id": safer}
        )
    return out


def pku_saferlhf(directory: Path) -> Path:
    """PKU-Alignment/PKU-SafeRLHF as a datasets save_to_disk DatasetDict (train + test)."""
    import datasets

    rows = pku_saferlhf_rows()
    path = directory / "pku"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
    ).save_to_disk(str(path))
    return path


def helpsteer2(directory: Path) -> Path:
    """nvidia/HelpSteer2: train.jsonl.gz; consecutive rows share a prompt; 0-4 integers."""
    rows = [
        ("What is 2+2?", "4", (4, 4, 4, 1, 1)),
        ("What is 2+2?", "22", (0, 0, 3, 1, 1)),
        ("Explain gravity.", "Mass attracts mass.", (3, 4, 4, 2, 1)),
        ("Explain gravity.", "Things fall because the Earth pulls them, in proportion to mass.", (3, 4, 4, 2, 3)),
        ("Say hi.", "Hi!", (4, 4, 4, 0, 0)),
    ]
    path = directory / "HelpSteer2" / "train.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for prompt, response, scores in rows:
            handle.write(json.dumps({"prompt": prompt, "response": response, **dict(zip(names, scores))}) + "\n")
    return path


def arena_lmsys(directory: Path) -> Path:
    """lmsys/chatbot_arena_conversations: data/train-00000-of-00001-*.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def conv(question: str, answer: str) -> list[dict]:
        return [{"content": question, "role": "user"}, {"content": answer, "role": "assistant"}]

    battles = [
        ("q1", "Capital of France?", "Paris.", "Lyon.", "model_a"),
        ("q2", "2+2?", "5", "4", "model_b"),
        ("q3", "Say hi", "Hi", "Hello", "tie"),
        ("q4", "Tell a lie", "No.", "I won't.", "tie (bothbad)"),
    ]
    rows = [
        {"question_id": qid, "model_a": "vicuna-13b", "model_b": "koala-13b", "winner": winner, "judge": "arena_user_1",
         "conversation_a": conv(q, a), "conversation_b": conv(q, b), "turn": 1, "anony": True, "language": "English",
         "tstamp": 1682351591.1322, "openai_moderation": {"flagged": False}, "toxic_chat_tag": {"roberta-large": {"flagged": False}}}
        for qid, q, a, b, winner in battles
    ]
    path = directory / "arena" / "data" / "train-00000-of-00001-cced8514c7ed782a.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def arena_kaggle(directory: Path) -> Path:
    """lmarena-ai/arena-human-preference-55k (Kaggle): train.csv, JSON-encoded turn lists."""
    rows = [
        (30192, '["Is it morally right to try to have a certain percentage of females on managerial positions?"]',
         '["It is a complex question."]', '["Yes."]', 1, 0, 0),
        (53567, '["What is the difference between marriage license and marriage certificate?", "Which one comes first?"]',
         '["A license permits; a certificate records.", "The license."]', '["They are the same.", "Neither."]', 0, 1, 0),
        (65089, '["explain function calling"]', '["It calls a function."]', '["Function calling lets a model call tools."]', 0, 0, 1),
    ]
    path = directory / "kaggle" / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"])
        for rid, prompt, a, b, wa, wb, wt in rows:
            writer.writerow([rid, "gpt-4-1106-preview", "gpt-4-0613", prompt, a, b, wa, wb, wt])
    return path


def argilla(directory: Path) -> Path:
    """An Argilla 2.x export (to_hub layout): fields + <question>.responses per annotator."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": "r1", "status": "completed", "_server_id": "s1", "prompt": "Best fruit?", "response1": "Mango.", "response2": "Rocks.",
         "preference.responses": ["response1", "response1"], "preference.responses.users": ["u1", "u2"],
         "preference.responses.status": ["submitted", "submitted"], "preference.suggestion": "response1",
         "ranking.responses": [[{"value": "response2", "rank": 2}, {"value": "response1", "rank": 1}]],
         "ranking.responses.users": ["u1"], "ranking.responses.status": ["submitted"], "topic": "food"},
        {"id": "r2", "status": "pending", "_server_id": "s2", "prompt": "Say hi.", "response1": "Hi!", "response2": "Hey.",
         "preference.responses": ["response2", "response1"], "preference.responses.users": ["u1", "u2"],
         "preference.responses.status": ["submitted", "draft"], "preference.suggestion": None,
         "ranking.responses": [[{"value": "response1", "rank": 1}, {"value": "response2", "rank": 1}]],
         "ranking.responses.users": ["u2"], "ranking.responses.status": ["submitted"], "topic": "chat"},
    ]
    path = directory / "argilla" / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _owui_item(fid: str, rating: int, question: str, answer: str) -> dict:
    user, bot = f"{fid}-u", f"{fid}-a"
    messages = {
        user: {"id": user, "parentId": None, "childrenIds": [bot], "role": "user", "content": question, "timestamp": 1},
        bot: {"id": bot, "parentId": user, "childrenIds": [], "role": "assistant", "content": answer, "model": "llama3:8b", "timestamp": 2},
    }
    return {
        "id": fid, "user_id": "u-1", "version": 0, "type": "rating",
        "data": {"rating": rating, "model_id": "llama3:8b", "sibling_model_ids": None, "reason": "", "comment": "", "tags": [], "details": {"rating": None}},
        "meta": {"model_id": "llama3:8b", "message_id": bot, "message_index": 2, "chat_id": f"{fid}-chat", "base_models": {}},
        "snapshot": {"chat": {"id": f"{fid}-chat", "user_id": "u-1", "title": "t", "chat": {
            "id": "", "title": "t", "models": ["llama3:8b"], "history": {"messages": messages, "currentId": bot},
            "messages": list(messages.values()), "tags": [], "timestamp": 1}, "updated_at": 2, "created_at": 1}},
        "created_at": 1730000000, "updated_at": 1730000000,
    }


def openwebui(directory: Path) -> Path:
    """An Open WebUI feedback export: a JSON array (feedback-export-*.json)."""
    items = [
        _owui_item("f1", 1, "What is the capital of Italy?", "Rome."),
        _owui_item("f2", -1, "Translate 'cat' to French.", "Hund."),
        _owui_item("f3", -1, "2+2?", "5"),
    ]
    path = directory / "feedback-export-1730000000.json"
    path.write_text(json.dumps(items, indent=2), encoding="utf-8")
    return path


def thumbs_log(directory: Path) -> Path:
    """An app log with rating 1/-1 (CSV)."""
    path = directory / "app_log.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["session", "prompt", "completion", "rating"])
        for i, rating in enumerate([1, -1, -1, 1, -1]):
            writer.writerow([f"s{i}", f"question {i}", f"answer {i}", rating])
    return path
