#!/usr/bin/env bash
# NOLA's llama/scripts/finetune_llama2_alpaca_7b_lora.sh (UCDvision/NOLA @ 03c7027), as written: the same flags and values.
# Changed: the model comes from MODEL_PATH (default meta-llama/Llama-2-7b-hf; the script had the
# authors' local copy), the interpreter from PYTHON, and extra flags given to this script are
# appended (a later flag overrides an earlier one). It runs qlora.py from NLG/llama/, as the
# original runs from llama/: --output_dir and data/mmlu are relative to that folder.
set -e
cd "$(dirname "$0")/.."
"${PYTHON:-python}" qlora.py \
    --model_name_or_path "${MODEL_PATH:-meta-llama/Llama-2-7b-hf}" \
    --output_dir ./output/llama-2-guanaco-7b \
    --logging_steps 5 \
    --save_strategy steps \
    --data_seed 42 \
    --save_steps 500 \
    --save_total_limit 40 \
    --evaluation_strategy steps \
    --eval_dataset_size 1024 \
    --max_eval_samples 1000 \
    --per_device_eval_batch_size 1 \
    --max_new_tokens 32 \
    --dataloader_num_workers 8 \
    --group_by_length \
    --logging_strategy steps \
    --remove_unused_columns False \
    --do_train \
    --do_eval \
    --do_mmlu_eval \
    --mmlu_split 'test'\
    --lora_r 1 \
    --lora_alpha 16 \
    --quant_type nf4 \
    --bf16 \
    --bits 4 \
    --warmup_ratio 0.03 \
    --lr_scheduler_type constant \
    --gradient_checkpointing \
    --dataset alpaca \
    --source_max_len 384 \
    --target_max_len 512 \
    --per_device_train_batch_size 16 \
    --gradient_accumulation_steps 16 \
    --max_steps 200 \
    --eval_steps 200 \
    --learning_rate 0.0002 \
    --adam_beta2 0.999 \
    --max_grad_norm 0.9 \
    --lora_dropout 0.0 \
    --weight_decay 0.0 \
    --seed 0 \
    "$@"
