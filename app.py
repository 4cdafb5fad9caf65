"""Hugging Face Space entry point (Gradio SDK): the slowfast-zoo demo page. Locally: ``slowfast-zoo demo``."""

from slowfast_zoo.tasks.demo import build_demo

demo = build_demo()

if __name__ == "__main__":
    demo.launch()
