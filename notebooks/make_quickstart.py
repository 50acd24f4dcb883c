"""Regenerate quickstart.ipynb from these cells: `python notebooks/make_quickstart.py`."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# ECH0 MoE quick start\n\nRouting, one-at-a-time swapping, RAG and compression on the embedded "
        "SmolLM2 experts. Runs offline; uses a throw-away knowledge base."
    ),
    new_code_cell(
        "import os, tempfile\n"
        "os.environ.setdefault('HF_HUB_OFFLINE', '1')\n"
        "from ech0_moe.graph import Context, build_graph\n"
        "from ech0_moe.services import ServiceRegistry\n"
        "ctx = Context(experts_file=os.path.abspath('../experts.yaml'), kb_dir=tempfile.mkdtemp(), max_tokens=32)\n"
        "svc = ServiceRegistry().for_run(ctx.experts_file, ctx.kb_dir)  # pool, router, compressors, knowledge base\n"
        "graph = build_graph(services=svc)"
    ),
    new_markdown_cell("## Routing (no model loaded)"),
    new_code_cell(
        "for q in ['Solve 3x + 5 = 20.', 'How do enzymes speed up reactions in the body?', "
        "'What is the resistance of two 4 ohm resistors in parallel?']:\n"
        "    d = svc.router.route(q)\n"
        "    print(f'{d.expert:<12} {d.confidence:.2f}  {q}')"
    ),
    new_markdown_cell("## Swapping: the budget holds one model file"),
    new_code_cell(
        "results = []\n"
        "for q, mode in [('What is 12 squared?', 'basic'), ('What does the heart do?', 'basic'), "
        "('What is 13 squared?', 'basic')]:\n"
        "    r = graph.invoke({'query': q, 'mode': mode}, context=ctx)\n"
        "    results.append(r)\n"
        "    print(r['expert_used'], 'swapped' if r['swapped'] else 'resident', r['load_seconds'])\n"
        "svc.pool.stats()['peak_loaded_bytes'] <= svc.pool.budget"
    ),
    new_markdown_cell("## RAG: learned answers come back for paraphrased questions"),
    new_code_cell(
        "graph.invoke({'query': 'What is the boiling point of water at sea level?'}, context=ctx)\n"
        "r = graph.invoke({'query': 'At sea level, water boils at what temperature?'}, context=ctx)\n"
        "[(c['source'], c['score']) for c in r['retrieved_contexts']]"
    ),
    new_markdown_cell("## Compression keeps the question and the facts"),
    new_code_cell(
        "doc = ('The Eiffel Tower was completed in 1889 for the World Fair. It is 330 metres tall. '\n"
        "       'Basically, many tourists really like to visit it. It was designed by the engineering firm '\n"
        "       'of Gustave Eiffel. ') * 6\n"
        "c = svc.compressor('extractive').compress('When was the Eiffel Tower completed?', [doc], target=0.4)\n"
        "print(c.ratio, '1889' in c.context)\n"
        "print(c.prompt()[:300])"
    ),
    new_markdown_cell("## Where the time goes (per node)"),
    new_code_cell(
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "t = r['timings']\n"
        "plt.barh(list(t), list(t.values()))\n"
        "plt.xlabel('seconds'); plt.title('optimized path, per node'); plt.tight_layout()"
    ),
    new_markdown_cell(
        "## Modes compared on answers\n\n`ech0_moe.benchmark` (the CLI: `ech0-moe bench modes --data FILE`) runs "
        "each mode cold on the same questions, beside the general expert alone and each question's domain "
        "expert, then a second optimized pass on what the first one learned. Multiple-choice answers are "
        "the option the expert finds most likely. SmolLM2-135M is near chance on exam questions: this "
        "shows the method, not a result."
    ),
    new_code_cell(
        "import ech0_moe\n"
        "from IPython.display import Image\n"
        "questions = [\n"
        "    {'question': 'What is 7 times 8?', 'choices': ['54', '56', '58', '64'], 'answer': 'B', "
        "'domain': 'mathematics'},\n"
        "    {'question': 'Which organ pumps blood around the body?', 'choices': ['Liver', 'Lung', 'Heart', "
        "'Kidney'], 'answer': 'C', 'domain': 'biology'},\n"
        "    {'question': 'What is the SI unit of force?', 'choices': ['Joule', 'Newton', 'Watt', 'Pascal'], "
        "'answer': 'B', 'domain': 'physics'},\n"
        "]\n"
        "png = os.path.join(tempfile.mkdtemp(), 'modes.png')\n"
        "report = ech0_moe.benchmark(questions, modes=['basic', 'optimized'], context=ctx, services=svc, "
        "baseline='single', oracle=True, plot=png, progress=False)\n"
        "print({m: r['accuracy'] for m, r in report['modes'].items()}, report['by_domain'])\n"
        "Image(png)"
    ),
]

if __name__ == "__main__":
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nbformat.write(nb, Path(__file__).with_name("quickstart.ipynb"))
