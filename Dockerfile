# CPU image for CI containers: `compressor` is the entry point.
#   docker build -t compressor .
#   docker run --rm -v "$PWD:/work" -w /work compressor run \
#       --teacher teacher.pt --data data --profile cpu-1thread --out runs/exp1
# The CPU-only PyTorch wheels keep the image small (no CUDA libraries); for a GPU image build
# with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 (or your CUDA) and run
# with --gpus all.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

RUN pip install "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/compressor
COPY pyproject.toml README.md ./
COPY compressor ./compressor
COPY profiles ./profiles
RUN pip install . && compressor --help > /dev/null

RUN useradd --create-home runner
USER runner
WORKDIR /work
ENTRYPOINT ["compressor"]
CMD ["--help"]
