;;; lspilot.el --- Local AI code completion (ghost text) over eglot  -*- lexical-binding: t; -*-

;; SPDX-License-Identifier: Apache-2.0
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1") (eglot "1.9") (jsonrpc "1.0.14"))
;; Keywords: convenience, tools, languages
;; URL: https://github.com/lspilot/lspilot

;;; Commentary:

;; `lspilot-mode' shows suggestions from the `lspilot lsp' language server as ghost text (an
;; overlay's after-string) at point.  When Emacs has been idle for `lspilot-idle-delay'
;; seconds after an edit, it sends `textDocument/inlineCompletion' (LSP 3.18) to the buffer's
;; eglot server; `lspilot/partialCompletion' notifications update the ghost text while the
;; model is still writing.  Keys while a suggestion is shown (`lspilot-suggestion-map'):
;;
;;   TAB        accept the whole suggestion        `lspilot-accept'
;;   M-<right>  accept the next word               `lspilot-accept-word'
;;   M-<down>   accept the next line               `lspilot-accept-line'
;;   M-] / M-[  next / previous choice             `lspilot-next' / `lspilot-previous'
;;   C-g        dismiss                            `lspilot-dismiss'
;;
;; Setup (eglot manages one server per buffer, so lspilot takes that slot; see
;; docs/editors.md for lsp-mode, which can run lspilot next to another server):
;;
;;   (require 'lspilot)
;;   (lspilot-eglot-setup '(python-mode python-ts-mode js-mode))
;;   (add-hook 'python-mode-hook #'eglot-ensure)
;;   (add-hook 'eglot-managed-mode-hook #'lspilot-mode)

;;; Code:

(require 'cl-lib)
(require 'eglot)
(require 'jsonrpc)

(defgroup lspilot nil
  "Local AI code completion."
  :group 'tools
  :prefix "lspilot-")

(defcustom lspilot-command '("lspilot" "lsp")
  "Command that starts the lspilot language server."
  :type '(repeat string))

(defcustom lspilot-initialization-options nil
  "Plist sent as initializationOptions, e.g. (:daemonAddress \"unix:/tmp/l.sock\")."
  :type 'plist)

(defcustom lspilot-idle-delay 0.1
  "Seconds of idle time after an edit before a suggestion is requested.
The server debounces too (its `debounceMs' option)."
  :type 'number)

(defcustom lspilot-request-timeout 30
  "Seconds before an unanswered request is given up."
  :type 'number)

(defface lspilot-suggestion-face '((t :inherit shadow))
  "Face of the ghost text.")

(defvar lspilot-suggestion-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "TAB") #'lspilot-accept)
    (define-key map (kbd "<tab>") #'lspilot-accept)
    (define-key map (kbd "M-<right>") #'lspilot-accept-word)
    (define-key map (kbd "M-<down>") #'lspilot-accept-line)
    (define-key map (kbd "M-]") #'lspilot-next)
    (define-key map (kbd "M-[") #'lspilot-previous)
    (define-key map (kbd "C-g") #'lspilot-dismiss)
    map)
  "Keys active while a suggestion is shown.")

(defvar lspilot-mode)

(defvar-local lspilot--visible nil
  "Non-nil while ghost text is shown; enables `lspilot-suggestion-map'.")

(add-to-list 'minor-mode-map-alist (cons 'lspilot--visible lspilot-suggestion-map))

;;;; State

(cl-defstruct (lspilot--request (:constructor lspilot--request-create))
  buffer tick point position version id server-id kind)

(cl-defstruct (lspilot--suggestion (:constructor lspilot--suggestion-create))
  anchor        ; marker where the text goes
  items         ; list of (TEXT . REPLACED): text to insert, existing text after it to replace
  (index 0)
  final         ; nil while only partial text has arrived
  invoked)      ; the items come from an Invoked request

(defvar-local lspilot--pending nil "The `lspilot--request' in flight.")
(defvar-local lspilot--current nil "The `lspilot--suggestion' shown.")
(defvar-local lspilot--overlay nil)
(defvar-local lspilot--timer nil)
(defvar-local lspilot--last-tick nil)
(defvar lspilot--commands
  '(lspilot-accept lspilot-accept-word lspilot-accept-line lspilot-next lspilot-previous
    lspilot-dismiss lspilot-complete)
  "Commands that manage the suggestion themselves.")

;;;; Drawing

(defun lspilot--remainder ()
  "The part of the shown item not typed yet, or nil when point left it.
Returns (REST . REPLACED)."
  (when-let* ((cur lspilot--current)
              (item (nth (lspilot--suggestion-index cur) (lspilot--suggestion-items cur)))
              (anchor (lspilot--suggestion-anchor cur)))
    (when (and (eq (marker-buffer anchor) (current-buffer)) (>= (point) anchor))
      (let ((typed (buffer-substring-no-properties anchor (point)))
            (text (car item))
            (replaced (cdr item)))
        (when (and (< (length typed) (length text)) (string-prefix-p typed text))
          (cons (substring text (length typed))
                (if (and (not (string-empty-p replaced))
                         (string-prefix-p replaced
                                          (buffer-substring-no-properties
                                           (point) (min (point-max)
                                                        (+ (point) (length replaced))))))
                    replaced
                  "")))))))

(defun lspilot--clear-overlay ()
  (when (overlayp lspilot--overlay)
    (delete-overlay lspilot--overlay))
  (setq lspilot--overlay nil lspilot--visible nil))

(defun lspilot--render ()
  "Draw the current suggestion at point; nil when there is none to draw."
  (let ((rem (lspilot--remainder)))
    (if (not rem)
        (progn (lspilot--clear-overlay) nil)
      (let ((shown (car rem)) (replaced (cdr rem)))
        ;; A one-line suggestion ending with the closing characters already after point
        ;; shows only what comes before them.
        (when (and (not (string-empty-p replaced)) (not (string-search "\n" shown))
                   (string-suffix-p replaced shown))
          (setq shown (substring shown 0 (- (length shown) (length replaced)))))
        (setq shown (propertize shown 'face 'lspilot-suggestion-face))
        ;; Keep the cursor before the ghost text, not after it.
        (unless (string-empty-p shown)
          (put-text-property 0 1 'cursor t shown))
        (unless (overlayp lspilot--overlay)
          (setq lspilot--overlay (make-overlay (point) (point) nil t nil))
          (overlay-put lspilot--overlay 'priority 1000)
          (overlay-put lspilot--overlay 'lspilot t))
        (move-overlay lspilot--overlay (point) (point))
        (overlay-put lspilot--overlay 'after-string shown)
        (setq lspilot--visible t)))))

(defun lspilot-current-text ()
  "The ghost text shown now, or nil."
  (and (overlayp lspilot--overlay)
       (substring-no-properties (overlay-get lspilot--overlay 'after-string))))

;;;; Requests

(defun lspilot--uri (file)
  "FILE as an LSP URI (`eglot-path-to-uri' is public from eglot 1.16 on)."
  (if (fboundp 'eglot-path-to-uri)
      (funcall #'eglot-path-to-uri file)
    (funcall #'eglot--path-to-uri file)))

(defun lspilot--server ()
  (and (bound-and-true-p eglot--managed-mode) (eglot-current-server)))

(defun lspilot--cancel ()
  (when-let ((p lspilot--pending))
    (setq lspilot--pending nil)
    (when-let ((server (lspilot--server)) (id (lspilot--request-id p)))
      (ignore-errors (jsonrpc-notify server :$/cancelRequest `(:id ,id))))))

(defun lspilot--still-current (req)
  (and (eq (current-buffer) (lspilot--request-buffer req))
       (= (buffer-chars-modified-tick) (lspilot--request-tick req))
       (= (point) (lspilot--request-point req))))

(defun lspilot--normalize (req raw)
  "Turn an InlineCompletionItem RAW into (TEXT . REPLACED) at REQ's point, or nil."
  (let* ((text (plist-get raw :insertText))
         (text (if (stringp text) text (plist-get text :value)))
         (range (plist-get raw :range))
         (pt (lspilot--request-point req))
         (replaced ""))
    (when (and (stringp text) range)
      (pcase-let ((`(,beg . ,end) (eglot--range-region range)))
        (cond ((< beg pt)
               (let ((typed (buffer-substring-no-properties beg pt)))
                 (setq text (and (string-prefix-p typed text) (substring text (length typed))))))
              ((> beg pt)
               (setq text (concat (buffer-substring-no-properties pt beg) text))))
        (when (> end pt)
          (setq replaced (buffer-substring-no-properties pt end)))))
    (when (and (stringp text) (not (string-empty-p text)))
      (cons text replaced))))

(defun lspilot--on-response (req buffer result)
  (when (buffer-live-p buffer)
    (with-current-buffer buffer
      (when (eq req lspilot--pending)
        (setq lspilot--pending nil)
        (when (lspilot--still-current req)
          (let* ((raw (if (vectorp result) result (plist-get result :items)))
                 (items (delq nil (mapcar (lambda (r) (lspilot--normalize req r)) raw))))
            (if (null items)
                (progn (setq lspilot--current nil) (lspilot--clear-overlay))
              (setq lspilot--current
                    (lspilot--suggestion-create
                     :anchor (copy-marker (lspilot--request-point req))
                     :items items
                     :index (if (eq (lspilot--request-kind req) 'next)
                                (min 1 (1- (length items)))
                              0)
                     :final t
                     :invoked (eq (lspilot--request-kind req) 'next)))
              (lspilot--render))))))))

(defun lspilot--request (&optional kind)
  "Ask for a suggestion at point.
KIND nil is an automatic trigger; `invoked' and `next' are invoked ones."
  (when-let ((server (lspilot--server)))
    (lspilot--cancel)
    (eglot--signal-textDocument/didChange)
    (let* ((buffer (current-buffer))
           (params (append (eglot--TextDocumentPositionParams)
                           `(:context (:triggerKind ,(if kind 1 2)))))
           (req (lspilot--request-create
                 :buffer buffer :tick (buffer-chars-modified-tick) :point (point)
                 :position (plist-get params :position)
                 :version eglot--versioned-identifier :kind kind))
           (ret (apply (if (fboundp 'jsonrpc--async-request-1)
                           #'jsonrpc--async-request-1
                         #'jsonrpc-async-request)
                       server :textDocument/inlineCompletion params
                       (list :success-fn (lambda (result) (lspilot--on-response req buffer result))
                             :error-fn (lambda (err)
                                         (with-current-buffer buffer
                                           (when (eq req lspilot--pending)
                                             (setq lspilot--pending nil)
                                             (unless (memq (plist-get err :code)
                                                           '(-32800 -32801 -32802))
                                               (message "lspilot: %s" (plist-get err :message))))))
                             :timeout-fn (lambda ()
                                           (with-current-buffer buffer
                                             (when (eq req lspilot--pending)
                                               (setq lspilot--pending nil))))
                             :timeout lspilot-request-timeout))))
      (setf (lspilot--request-id req) (if (consp ret) (car ret) ret))
      (setq lspilot--pending req))))

(cl-defmethod eglot-handle-notification
  (_server (_method (eql lspilot/partialCompletion)) &key textDocument position requestId text
           &allow-other-keys)
  "Show the suggestion so far of the request in flight."
  (when-let* ((uri (plist-get textDocument :uri))
              (buffer (cl-find-if (lambda (b)
                                    (with-current-buffer b
                                      (and lspilot--pending buffer-file-name
                                           (equal (lspilot--uri buffer-file-name) uri))))
                                  (buffer-list))))
    (with-current-buffer buffer
      (let ((req lspilot--pending)
            (version (plist-get textDocument :version)))
        (when (and req (stringp text) (not (string-empty-p text))
                   (equal position (lspilot--request-position req))
                   (or (null version) (equal version (lspilot--request-version req)))
                   (lspilot--still-current req)
                   (not (and lspilot--current (lspilot--suggestion-final lspilot--current))))
          (ignore requestId)
          (setq lspilot--current
                (lspilot--suggestion-create :anchor (copy-marker (lspilot--request-point req))
                                            :items (list (cons text "")) :final nil))
          (lspilot--render))))))

;;;; Command loop hooks

(defun lspilot--on-idle (buffer tick pt)
  (when (buffer-live-p buffer)
    (with-current-buffer buffer
      (setq lspilot--timer nil)
      (when (and lspilot-mode (eq (window-buffer) buffer)
                 (= tick (buffer-chars-modified-tick)) (= pt (point)))
        (lspilot--request)))))

(defun lspilot--post-command ()
  (unless (memq this-command lspilot--commands)
    (let ((tick (buffer-chars-modified-tick)))
      (cond
       ((and lspilot--current (lspilot--render))
        ;; Typing through the suggestion: keep showing the rest, ask for nothing new unless
        ;; only part of it has arrived.
        (unless (lspilot--suggestion-final lspilot--current)
          (lspilot--schedule)))
       (t
        (setq lspilot--current nil)
        (lspilot--clear-overlay)
        (lspilot--cancel)
        ;; Ask after edits; plain motion only clears.
        (unless (equal tick lspilot--last-tick)
          (lspilot--schedule))))
      (setq lspilot--last-tick tick))))

(defun lspilot--schedule ()
  (when (timerp lspilot--timer)
    (cancel-timer lspilot--timer))
  (setq lspilot--timer
        (run-with-idle-timer lspilot-idle-delay nil #'lspilot--on-idle
                             (current-buffer) (buffer-chars-modified-tick) (point))))

;;;; Commands

(defun lspilot--insert (piece full rem)
  (let ((replaced (cdr rem)))
    (when (and full (not (string-empty-p replaced)))
      (delete-region (point) (+ (point) (length replaced))))
    (insert piece)))

(defun lspilot--accept (how)
  (let ((rem (lspilot--remainder)))
    (if (not rem)
        (when (eq how 'all) (indent-for-tab-command))
      (let* ((rest (car rem))
             (piece (pcase how
                      ('word (if (string-match
                                  "\\`\\(?:[ \t]*[[:alnum:]_]+\\|[ \t]*[^[:alnum:]_[:space:]]+\\|\n[ \t]*\\|[[:space:]]+\\)"
                                  rest)
                                 (match-string 0 rest)
                               rest))
                      ('line (if (string-match "\\`\n?[^\n]*\n?" rest) (match-string 0 rest) rest))
                      (_ rest)))
             (full (>= (length piece) (length rest))))
        (lspilot--insert piece full rem)
        (if full
            (progn (setq lspilot--current nil) (lspilot--clear-overlay))
          (lspilot--render))
        (setq lspilot--last-tick (buffer-chars-modified-tick))))))

(defun lspilot-accept ()
  "Insert the whole suggestion (TAB indents when none is shown)."
  (interactive)
  (lspilot--accept 'all))

(defun lspilot-accept-word ()
  "Insert the next word of the suggestion; the rest stays shown."
  (interactive)
  (lspilot--accept 'word))

(defun lspilot-accept-line ()
  "Insert the suggestion up to and including its next line break."
  (interactive)
  (lspilot--accept 'line))

(defun lspilot--cycle (step)
  (let ((cur lspilot--current))
    (cond
     ((or (null cur) (not (lspilot--remainder))) (lspilot--request 'invoked))
     ((> (length (lspilot--suggestion-items cur)) 1)
      (setf (lspilot--suggestion-index cur)
            (mod (+ (lspilot--suggestion-index cur) step)
                 (length (lspilot--suggestion-items cur))))
      (lspilot--render))
     ((not (lspilot--suggestion-invoked cur))
      (setq lspilot--current nil)
      (lspilot--request 'next)))))

(defun lspilot-next ()
  "Show the next choice (asks the server for all of them first)."
  (interactive)
  (lspilot--cycle 1))

(defun lspilot-previous ()
  "Show the previous choice."
  (interactive)
  (lspilot--cycle -1))

(defun lspilot-complete ()
  "Ask for a suggestion at point now."
  (interactive)
  (lspilot--request 'invoked))

(defun lspilot-dismiss ()
  "Hide the suggestion and cancel any request in flight."
  (interactive)
  (lspilot--cancel)
  (setq lspilot--current nil)
  (lspilot--clear-overlay))

(defun lspilot-status ()
  "Show the daemon's status (workspace/executeCommand lspilot.status)."
  (interactive)
  (let ((status (jsonrpc-request (eglot--current-server-or-lose) :workspace/executeCommand
                                 '(:command "lspilot.status" :arguments []))))
    (message "lspilot: %S" status)
    status))

;;;###autoload
(define-minor-mode lspilot-mode
  "Show lspilot suggestions as ghost text in this eglot-managed buffer."
  :lighter " pilot"
  (if lspilot-mode
      (add-hook 'post-command-hook #'lspilot--post-command nil t)
    (remove-hook 'post-command-hook #'lspilot--post-command t)
    (lspilot-dismiss)))

;;;###autoload
(defun lspilot-eglot-setup (modes)
  "Make eglot start lspilot for the major MODES (a list of symbols)."
  (add-to-list 'eglot-server-programs
               `(,modes . (,@lspilot-command
                           :initializationOptions
                           ,(lambda (_server) (or lspilot-initialization-options
                                                  eglot--{}))))))

(provide 'lspilot)
;;; lspilot.el ends here
